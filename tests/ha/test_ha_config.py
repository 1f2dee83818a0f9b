"""The HA topology's configuration templates render into files their programs accept."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from deploy.ops.stack import haproxy
from deploy.ops.stack.conf import render
from deploy.ops.stack.server import StackError
from deploy.ops.stack.settings import HASettings


def test_haproxy_config_with_daemon_frontends_is_valid(tmp_path):
    ha = HASettings(frontends="reservation=8083:18083,18093; billing=8084:18084,18094")
    text = haproxy.render(ha)
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    check = subprocess.run([haproxy.HAPROXY, "-c", "-f", str(path)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "listen reservation" in text and "bind 127.0.0.1:8083" in text and "server billing2 127.0.0.1:18094" in text
    assert text.count("option httpchk GET /ready") == 2
    assert text.count("option httpchk OPTIONS /primary") == 1 and "OPTIONS /replica" in text


def test_haproxy_without_frontends_has_only_postgres_and_stats():
    text = haproxy.render(HASettings())
    assert "listen reservation" not in text and "bind 127.0.0.1:17540" in text and "bind 127.0.0.1:17541" in text


@pytest.mark.parametrize("bad", ["reservation", "reservation=8083", "=8083:1", "x=80:y"])
def test_a_bad_frontend_entry_is_refused(bad):
    with pytest.raises(StackError, match="TICKETFLOW_HA_FRONTENDS"):
        haproxy.parse_frontends(bad)


def test_patroni_config_keeps_the_measured_safety_settings():
    text = render(
        "patroni.yml", SCOPE="s", NODE_NAME="pg1", REST_PORT=1, ETCD_HOSTS="127.0.0.1:2", PG_PORT=3,
        DATA_DIR="/d/data", BIN_DIR="/b", PGPASS="/d/pgpass", LOG_DIR="/d/log", SUPERUSER="u",
        SUPERUSER_PASSWORD="p", REPLICATION_USER="r", REPLICATION_PASSWORD="p", PRE_PROMOTE="/d/pre-promote.sh",
        HOST="127.0.0.1", LISTEN_HOST="127.0.0.1", CLIENT_CIDR="127.0.0.1/32")
    settings = {key.strip(): value.strip() for key, _, value in
                (line.partition(":") for line in text.splitlines() if not line.lstrip().startswith("#"))}
    assert settings["synchronous_mode"] == "true" and settings["synchronous_mode_strict"] == "true"
    assert settings["primary_start_timeout"] == "0"
    assert settings["pre_promote"] == "/d/pre-promote.sh"  # standbys' slots exist before a promotion
    assert "etcd3" in settings and "etcd" not in settings  # the etcd3 API, not v2
    assert settings["logging_collector"] == '"on"'
    assert not Path(settings["log_directory"]).is_relative_to(settings["data_dir"])  # pg_rewind overwrites data

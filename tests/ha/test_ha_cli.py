"""`ticketflow run|status --topology ha` point the daemons at HAProxy's read-write port."""

import os

from deploy.ops import cli
from deploy.ops.stack.settings import HASettings, stack_settings
from deploy.ops.supervisor import daemon_env


def test_run_with_the_ha_topology_gives_daemons_the_rw_port_and_keeps_explicit_shared_settings(monkeypatch):
    monkeypatch.setattr(os, "environ", os.environ.copy())  # _use_topology writes the process environment
    monkeypatch.setenv("TICKETFLOW_PG_DSN", "postgresql://x:y@127.0.0.1:1/local")
    monkeypatch.setenv("TICKETFLOW_MARIADB_DSN", "mysql://mine:pw@127.0.0.1:2/mine")
    monkeypatch.delenv("TICKETFLOW_PORTAL_PG_DSN", raising=False)
    assert f":{HASettings().rw_port}/" not in daemon_env(stack_settings())["TICKETFLOW_PG_DSN"]
    cli._use_topology("ha")
    env = daemon_env(stack_settings())
    assert f"@127.0.0.1:{HASettings().rw_port}/" in env["TICKETFLOW_PG_DSN"]
    assert env["TICKETFLOW_PORTAL_PG_DSN"] == env["TICKETFLOW_PG_DSN"]
    assert env["TICKETFLOW_MARIADB_DSN"] == "mysql://mine:pw@127.0.0.1:2/mine"


def test_the_cli_accepts_the_ha_topology_everywhere_it_matters():
    parser = cli.build_parser()
    for argv in (["stack", "up", "--topology", "ha"], ["run", "all", "--topology", "ha"],
                 ["status", "--topology", "ha"], ["stack", "status", "--topology", "ha", "--json"]):
        assert parser.parse_args(argv).topology == "ha"

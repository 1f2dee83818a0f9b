"""`ticketflow drill` refuses what it does not recognise, before touching anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from deploy.ops.drill.faults import DrillRefused, KillDaemon, LbReplica, PgFailover, Target
from deploy.ops.drill.run import recognise
from deploy.ops.stack.topology import ha


def test_the_pg_drills_refuse_without_an_ha_topology_running_from_this_stack_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TICKETFLOW_HA_STACK_DIR", str(tmp_path / "nothing-here"))
    with pytest.raises(DrillRefused, match="needs the HA topology"):
        recognise(PgFailover(), Target(urls={}, token="t", env={}))
    with pytest.raises(DrillRefused, match="not up from"):
        recognise(PgFailover(), Target(urls={}, token="t", env={}, topology=ha()))


def test_daemon_and_replica_drills_refuse_without_a_supervisor_or_replicas(tmp_path):
    with pytest.raises(DrillRefused, match="no running reservation"):
        KillDaemon("reservation").check(Target(urls={}, token="t", env={}))
    with pytest.raises(DrillRefused, match="replicas"):
        LbReplica().check(Target(urls={}, token="t", env={}))


def test_the_cli_exits_2_with_a_reason_against_a_stack_directory_it_does_not_know(tmp_path):
    env = {**os.environ, "TICKETFLOW_STACK_DIR": str(tmp_path), "TICKETFLOW_HA_STACK_DIR": str(tmp_path / "ha")}
    result = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "drill", "pg-failover"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "refused" in result.stderr, result.stdout + result.stderr


def test_a_second_drill_against_the_same_stack_is_refused_while_one_runs(tmp_path):
    """Two drills at once (a terminal and a console, two portal replicas, a console restarted mid-drill) could
    each kill a node of the same cluster: the stack directory's drill.lock lets one run."""
    import fcntl

    env = {**os.environ, "TICKETFLOW_STACK_DIR": str(tmp_path), "TICKETFLOW_HA_STACK_DIR": str(tmp_path / "ha")}
    with open(tmp_path / "drill.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the running drill
        busy = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "drill", "mariadb-writer"], env=env,
                              capture_output=True, text=True, timeout=60)
    assert busy.returncode == 2 and "another drill is running" in busy.stderr, busy.stdout + busy.stderr
    free = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "drill", "mariadb-writer"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert free.returncode == 2 and "another drill" not in free.stderr, free.stdout + free.stderr  # its own refusal

"""Fixtures shared by the tests of tests/ha (marks by directory: tests/conftest.py)."""

from __future__ import annotations

import shutil
import time

import pytest

from deploy.ops.stack.topology import ha
from tests.support.stack import free_port, free_port_block


@pytest.fixture(scope="module")
def galera(tmp_path_factory):
    """A private MariaDB Galera x3 behind HAProxy's single-writer port, on free ports and a private directory.

    Only the Galera nodes and HAProxy run (no etcd or Patroni: their HAProxy sections point at
    private ports nothing listens on). One cluster per test module (bootstrap 9-15 s).
    """
    directory = tmp_path_factory.mktemp("galera") / "ha"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("GALERA_PORT", "GALERA_REPL_PORT", "GALERA_IST_PORT", "GALERA_SST_PORT", "PG_PORT",
                     "PATRONI_PORT", "ETCD_CLIENT_PORT", "ETCD_PEER_PORT"):
            mp.setenv(f"TICKETFLOW_HA_{name}", str(free_port_block(3)))
        for name in ("MARIADB_WRITER_PORT", "STATS_PORT", "RW_PORT", "RO_PORT"):
            mp.setenv(f"TICKETFLOW_HA_{name}", str(free_port()))
        mp.setenv("TICKETFLOW_HA_STACK_DIR", str(directory))
        mp.setenv("TICKETFLOW_HA_GALERA", "1")
        topology = ha()
        try:
            started = time.monotonic()
            states = topology.galera.up(None)
            topology.proxy.up()
            topology.galera.wait_writer()
            print(f"Galera x3 bootstrap from nothing, writer routed: {time.monotonic() - started:.1f}s")
            assert list(states.values()) == ["initialised and started"] * 3, states
            yield topology
        finally:
            writer = topology.galera.writer()
            topology.proxy.stop()
            topology.galera.down(writer)
            for link in directory.glob("*/private"):
                shutil.rmtree(link.resolve().parent, ignore_errors=True)

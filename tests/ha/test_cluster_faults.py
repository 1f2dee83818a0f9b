"""The cluster faults' pure parts (no servers): the publishing stall, how a Galera node caught up, the refusals,
and the health check's view of a RabbitMQ queue whose rejoined member is not back yet."""

from __future__ import annotations

import pytest

from deploy.ops.drill.cluster_faults import (
    MariadbNode,
    MariadbWriter,
    RabbitmqNode,
    publish_stall,
    state_transfer,
)
from deploy.ops.drill.faults import DrillRefused, Target, cluster_problems


def test_the_publishing_stall_is_the_longest_wait_with_payments_waiting_and_no_confirm():
    # (t, billing's acknowledged seq, lag): quick confirms, then the kill at 1.0, nothing confirmed until 1.7.
    samples = [(0.80, 10, 0), (0.85, 10, 1), (0.90, 11, 0),
               (1.00, 11, 0), (1.05, 11, 2), (1.10, 11, 3), (1.50, 11, 4), (1.70, 15, 0),
               (1.75, 15, 1), (1.80, 16, 0)]
    stall = publish_stall(samples, since=1.0)
    assert stall == {"stall_s": pytest.approx(0.65), "unresolved": False, "resumed_s": 1.7,
                     "typical_s": pytest.approx(0.05), "stretches": 2}


def test_an_idle_stream_is_no_stall_and_a_stretch_still_open_at_the_end_is_unresolved():
    assert publish_stall([(1.0, 5, 0), (1.5, 5, 0), (2.0, 5, 0)], since=1.0) == {
        "stall_s": 0.0, "unresolved": False, "resumed_s": None, "typical_s": None, "stretches": 0}
    open_ = publish_stall([(1.0, 5, 0), (1.2, 5, 1), (2.0, 5, 3)], since=1.0)
    assert open_["unresolved"] and open_["stall_s"] == pytest.approx(0.8)


def test_a_payment_in_flight_when_sampling_stops_is_not_a_stall_but_a_long_open_wait_is():
    # The kill's stall resolved at 1.7; at the end one payment waits 0.1 s for its confirm, as under any load.
    resolved = [(1.0, 11, 0), (1.05, 11, 2), (1.5, 11, 4), (1.7, 15, 0), (5.0, 20, 0), (5.05, 20, 1), (5.15, 20, 2)]
    stall = publish_stall(resolved, since=1.0)
    assert stall["unresolved"] is False and stall["stall_s"] == pytest.approx(0.65) and stall["resumed_s"] == 1.7
    # ... but a wait still open that is longer than the resolved one and than the 1 s goal is a stall never resolved.
    stuck = publish_stall([*resolved, (6.5, 20, 9)], since=1.0)
    assert stuck["unresolved"] is True and stuck["stall_s"] == pytest.approx(1.45) and stuck["resumed_s"] is None


def test_a_wait_that_began_before_the_fault_counts_from_the_fault():
    stall = publish_stall([(0.5, 1, 1), (1.0, 1, 1), (1.4, 2, 0)], since=1.0)
    assert stall["stall_s"] == pytest.approx(0.4)


def test_how_a_galera_node_caught_up_is_read_from_its_log():
    # As a killed node restarted with its recovered position logs it (the SST script runs, bypassing the dump).
    ist = ("WSREP_SST: [INFO] rsync SST started on joiner (20261127 09:36:46.465)\n"
           "[Note] WSREP: Member 0.0 (galera3) requested state transfer from 'galera2,'. "
           "Selected 2.0 (galera2)(SYNCED) as donor.\n[Note] WSREP: Prepared IST receiver for 210-268\n"
           "WSREP_SST: [INFO] rsync IST completed on joiner (20261127 09:36:48.637)\n[Note] WSREP: SST received\n"
           "[Note] WSREP: Receiving IST: 59 writesets, seqnos 210-268\n"
           "[Note] WSREP: IST received: 9a2c1f3e-0000-0000-0000-000000000000:268\n")
    assert state_transfer(ist) == {"by": "IST", "donor": "galera2"}
    sst = ("Selected 0.0 (galera1)(SYNCED) as donor.\n"
           "WSREP_SST: [INFO] rsync SST started on joiner (20261127 09:36:46.465)\n"
           "WSREP_SST: [INFO] rsync SST completed on joiner (20261127 09:36:58.100)\n"
           "[Note] WSREP: SST received: 9a2c1f3e-0000-0000-0000-000000000000:80\n")
    assert state_transfer(sst) == {"by": "SST", "donor": "galera1"}
    assert state_transfer("[Note] WSREP: Synchronized with group, ready for connections\n") == {
        "by": "none", "donor": None}


def test_the_cluster_faults_refuse_a_stack_without_their_cluster():
    bare = Target(urls={}, token="t", env={})
    for fault in (MariadbWriter(), MariadbNode()):
        with pytest.raises(DrillRefused, match="no Galera"):
            fault.check(bare)
    with pytest.raises(DrillRefused, match="no RabbitMQ cluster"):
        RabbitmqNode().check(bare)


def test_the_cluster_faults_refuse_daemons_that_do_not_use_the_cluster(tmp_path, monkeypatch):
    from deploy.ops.stack.topology import ha

    monkeypatch.setenv("TICKETFLOW_HA_STACK_DIR", str(tmp_path / "ha"))
    topology = ha()
    local = Target(urls={}, token="t", topology=topology, env={
        "TICKETFLOW_MARIADB_DSN": "mysql://u:p@127.0.0.1:17306/ticketflow",
        "TICKETFLOW_AMQP_URL": "amqp://u:p@127.0.0.1:17672/"})
    with pytest.raises(DrillRefused, match="not HAProxy's Galera writer port"):
        MariadbWriter().check(local)
    with pytest.raises(DrillRefused, match="do not list the cluster's nodes"):
        RabbitmqNode().check(local)
    # The daemons on the cluster, but the cluster not running from here: refused all the same.
    on_it = Target(urls={}, token="t", topology=topology, env={**topology.galera.env(), **topology.rabbit.env()})
    with pytest.raises(DrillRefused, match="Galera nodes not running from here"):
        MariadbNode().check(on_it)
    with pytest.raises(DrillRefused, match="RabbitMQ nodes not running from here"):
        RabbitmqNode().check(on_it)


class FakeTopology:
    def __init__(self, report: dict) -> None:
        self._report = report

    def report(self) -> dict:
        return self._report


def healthy_report() -> dict:
    members = ["ticketflow-1@localhost", "ticketflow-2@localhost", "ticketflow-3@localhost"]
    return {
        "postgres": [{"name": "pg1", "role": "leader", "state": "running"},
                     {"name": "pg2", "role": "sync_standby", "state": "streaming"}],
        "etcd": [{"name": "etcd1", "healthy": True}],
        "haproxy": [{"proxy": "postgres_rw", "server": "pg1", "status": "UP"},
                    {"proxy": "mariadb_writer", "server": "galera1", "status": "UP"},
                    {"proxy": "mariadb_writer", "server": "galera2", "status": "UP"}],
        "galera": {"writer": "galera1", "nodes": [
            {"name": f"galera{i}", "state": "Synced", "local_state": 4, "cluster_size": 2,
             "cluster_status": "Primary"} for i in (1, 2)]},
        "rabbitmq": {"nodes": [{"name": f"rabbit{i}", "running": True} for i in (1, 2, 3)],
                     "quorum_queues": [{"name": "p.portal", "leader": members[0], "members": members,
                                        "online": members}]},
    }


def test_health_includes_the_galera_nodes_behind_haproxy_and_every_quorum_queue_member(monkeypatch):
    class Node:
        def __init__(self, name):
            self.name = name

    topology = FakeTopology(healthy_report())
    topology.nodes = [Node("pg1"), Node("pg2")]
    assert cluster_problems(topology) == []

    report = healthy_report()
    report["haproxy"][2]["status"] = "DOWN"
    report["galera"]["nodes"][1].update(state="Joined", local_state=3)
    report["rabbitmq"]["quorum_queues"][0]["online"] = report["rabbitmq"]["quorum_queues"][0]["members"][:2]
    topology = FakeTopology(report)
    topology.nodes = [Node("pg1"), Node("pg2")]
    problems = cluster_problems(topology)
    assert "HAProxy mariadb_writer/galera2 is DOWN" in problems
    assert "galera galera2 is Joined (Primary)" in problems
    assert "quorum queue p.portal: 2 of 3 members online" in problems

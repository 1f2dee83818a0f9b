"""The one replica registry (deploy/ops/daemons.py) that run all, the supervisor, stop, status and the drills read."""

import pytest

from deploy.ops.daemons import DAEMONS, every_replica, frontends, replicas
from deploy.ops.stack.haproxy import parse_frontends, render
from deploy.ops.stack.settings import HASettings
from deploy.runtime.config import link_targets


def test_the_local_topology_keeps_one_process_per_daemon_under_its_own_name_and_port():
    env = {"TICKETFLOW_RESERVATION_PORT": "9083"}
    assert [(r.name, r.http_port) for r in replicas(env, "local")] == [
        ("reservation", 9083), ("billing", 8084), ("bridge", 8085), ("portal", 8086)]
    assert replicas({**env, "TICKETFLOW_TOPOLOGY": "local"}) == replicas(env, "local")


def test_the_ha_topology_runs_two_reservation_and_two_billing_replicas_each_with_its_own_name_port_and_link():
    env = {"TICKETFLOW_RESERVATION_REPLICA_PORTS": "21001,21002", "TICKETFLOW_BILLING_REPLICA_PORTS": "21003,21004",
           "TICKETFLOW_BILLING_LINK_REPLICA_PORTS": "21005,21006", "TICKETFLOW_TOPOLOGY": "ha"}
    found = {r.name: r for r in replicas(env)}
    assert list(found) == ["reservation-1", "reservation-2", "billing-1", "billing-2", "bridge", "portal"]
    assert {name: r.env["TICKETFLOW_INSTANCE"] for name, r in found.items()} == {name: name for name in found}
    assert [found[n].http_port for n in ("reservation-1", "reservation-2", "billing-1", "billing-2")] == \
        [21001, 21002, 21003, 21004]
    assert found["billing-2"].env == {"TICKETFLOW_BILLING_PORT": "21004", "TICKETFLOW_INSTANCE": "billing-2",
                                      "TICKETFLOW_BILLING_LINK_PORT": "21006",
                                      # behind HAProxy on this machine: clients counted by the forwarded address
                                      "TICKETFLOW_TRUSTED_PROXIES": "127.0.0.1/32"}
    # Each reservation relay knows every billing receiver, in order (it tries them in turn).
    for name in ("reservation-1", "reservation-2"):
        assert link_targets(found[name].env["TICKETFLOW_BILLING_LINK_HOST"], 7001) == [
            ("127.0.0.1", 21005), ("127.0.0.1", 21006)]
    # HAProxy's frontends are derived from the same registry: public port -> the replicas' ports.
    spec = frontends(env)
    assert parse_frontends(spec) == [("reservation", 8083, [21001, 21002]), ("billing", 8084, [21003, 21004])]
    config = render(HASettings(frontends=spec))
    assert "bind 127.0.0.1:8083" in config and "server billing2 127.0.0.1:21004 check" in config


def test_stop_knows_the_replicas_of_every_topology_and_bad_ports_are_refused():
    names = [r.name for r in every_replica({})]
    assert set(names) == {"reservation", "billing", "bridge", "portal",
                          "reservation-1", "reservation-2", "billing-1", "billing-2"}
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="TICKETFLOW_RESERVATION_REPLICA_PORTS"):
        replicas({"TICKETFLOW_RESERVATION_REPLICA_PORTS": "80000"}, "ha")
    with pytest.raises(ValueError, match="one link port per billing replica"):
        replicas({"TICKETFLOW_BILLING_LINK_REPLICA_PORTS": "21005"}, "ha")
    assert {spec.name for spec in DAEMONS if spec.ha_ports({})} == {"reservation", "billing"}

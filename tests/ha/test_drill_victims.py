"""The daemon drills find their victims in ``daemons.replicas`` and attribute the writes clients saw fail."""

from __future__ import annotations

from deploy.ops.daemons import frontends, replicas
from deploy.ops.drill.faults import KillDaemon, Target, behind_haproxy
from deploy.ops.drill.run import per_victim
from deploy.ops.stack.haproxy import parse_frontends

ENV = {"TICKETFLOW_RESERVATION_REPLICA_PORTS": "21083,21093", "TICKETFLOW_BILLING_REPLICA_PORTS": "21084,21094",
       "TICKETFLOW_BILLING_LINK_REPLICA_PORTS": "21001,21011"}


def target(topology: str) -> Target:
    return Target(urls={}, token="t", env={}, replicas=replicas(ENV, topology))


def test_kill_takes_a_replica_name_or_a_daemon_name_meaning_its_first_replica():
    ha = target("ha")
    assert KillDaemon("reservation-2").victim(ha).name == "reservation-2"
    assert KillDaemon("reservation").victim(ha).name == "reservation-1"
    assert KillDaemon("bridge").victim(ha).name == "bridge"
    assert KillDaemon("billing").victim(target("local")).name == "billing"
    assert KillDaemon("nobody").victim(ha) is None


def test_the_replicas_behind_haproxy_are_the_servers_haproxy_is_configured_with():
    found = {(proxy, server): replica.http_port for replica, proxy, server in behind_haproxy(target("ha"))}
    # haproxy.render names server n of a frontend `<name><n>`, from the same port list
    configured = {(name, f"{name}{n}"): port for name, _, ports in parse_frontends(frontends(ENV))
                  for n, port in enumerate(ports, 1)}
    assert found == configured and len(found) == 4, (found, configured)
    assert behind_haproxy(target("local")) == []


def op(purchase, kind, attempt, t1, outcome):
    return {"purchase": purchase, "kind": kind, "attempt": attempt, "t0": t1 - 0.01, "t1": t1, "outcome": outcome}


def test_each_failed_write_counts_against_the_last_process_killed_before_it_ended():
    fault_at = 10.0
    victims = [{"name": "reservation-1", "killed_at_s": 0.0}, {"name": "billing-1", "killed_at_s": 3.0}]
    ops = [op("a", "reserve", 1, 9.0, "unknown"),  # before the fault: nobody's
           op("b", "reserve", 1, 10.5, "unknown"), op("b", "reserve", 2, 10.7, "ok"),
           op("c", "pay", 1, 13.5, "failed"), op("c", "pay", 2, 13.6, "unknown"), op("c", "pay", 3, 14.0, "ok"),
           op("d", "reserve", 1, 13.7, "ok")]
    first, second = per_victim(victims, ops, fault_at)
    assert (first["failed_writes"], first["failed_then_retried_ok"]) == (1, 1)
    assert (second["failed_writes"], second["failed_then_retried_ok"]) == (2, 1)
    assert first["name"] == "reservation-1" and second["killed_at_s"] == 3.0

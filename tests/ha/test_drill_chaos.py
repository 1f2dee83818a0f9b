"""`ticketflow drill chaos`: its steps, each fault's own write-gap window, and the whole drill on a private full HA
stack (Galera x3 and RabbitMQ x3 on, every port private) with the daemons supervised by `run all --topology ha`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid

import aiomysql
import pytest

from deploy.ops.drill.chaos import (
    CLUSTER_FAULTS,
    DEFAULT_STEPS,
    failures,
    parse_steps,
    step_figures,
    windows,
    writes_resumed,
)
from deploy.ops.drill.faults import FAULTS, KillDaemon, PgFailover
from deploy.ops.drill.load import History, Op
from deploy.ops.drill.report import passed, render
from deploy.ops.stack.settings import stack_settings
from deploy.runtime.amqp import Names
from tests.support.stack import free_port, free_port_block
from tests.support.supervised_ha import cli
from tests.support.supervised_ha import supervised_ha as supervised_ha_stack

# --- pure: the steps, the windows, the verdict ------------------------------------------------------------


def test_steps_are_composed_by_name_in_the_order_given():
    steps = parse_steps("kill:billing, pg-failover,kill:reservation-2")
    assert [s.name for s in steps] == ["kill:billing", "pg-failover", "kill:reservation-2"]
    assert isinstance(steps[0].fault, KillDaemon) and steps[0].fault.daemon == "billing"
    assert isinstance(steps[1].fault, PgFailover)
    assert steps[2].fault.daemon == "reservation-2"
    assert [s.name for s in parse_steps(None)] == list(DEFAULT_STEPS) == [s.name for s in parse_steps(" , ")]
    # every daemon kind, the PostgreSQL primary, the MariaDB writer and a RabbitMQ node
    assert {"kill:reservation", "kill:billing", "kill:bridge", "kill:portal", "pg-failover", "mariadb-writer",
            "rabbitmq-node"} == set(DEFAULT_STEPS)


def test_a_step_whose_fault_is_not_registered_is_unavailable_and_a_typo_is_refused():
    steps = parse_steps("kill:bridge,mariadb-writer,rabbitmq-node", faults={"pg-failover": PgFailover})
    assert [(s.name, s.fault is None) for s in steps] == [
        ("kill:bridge", False), ("mariadb-writer", True), ("rabbitmq-node", True)]
    registered = parse_steps("mariadb-writer", faults={"mariadb-writer": PgFailover})  # once registered: used
    assert isinstance(registered[0].fault, PgFailover)
    for bad in ("pg-falover", "kill:", "kill"):
        with pytest.raises(ValueError):
            parse_steps(bad)
    assert set(CLUSTER_FAULTS) >= {"mariadb-writer", "rabbitmq-node"}


def test_the_cli_refuses_an_unknown_step_before_touching_anything(tmp_path):
    env = {**os.environ, "TICKETFLOW_STACK_DIR": str(tmp_path), "TICKETFLOW_HA_STACK_DIR": str(tmp_path / "ha")}
    result = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "drill", "chaos", "--steps", "kill:bridge,pg-falover"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown chaos step 'pg-falover'" in result.stderr, result.stderr
    result = subprocess.run([sys.executable, "-m", "deploy.ops.cli", "drill", "chaos", "--steps", "kill:bridge"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "refused" in result.stderr, result.stderr  # known steps: on to the stack


def op(kind: str, t0: float, t1: float, outcome: str = "ok") -> dict:
    return {"purchase": f"p{t0}", "kind": kind, "attempt": 1, "t0": t0, "t1": t1, "outcome": outcome,
            "status": None if outcome == "unknown" else 200 if outcome == "ok" else 503, "code": None}


def steady(kind: str, start: float, end: float, step: float = 0.1, outcome: str = "ok") -> list[dict]:
    n = round((end - start) / step)
    return [op(kind, start + i * step, start + i * step + 0.05, outcome) for i in range(n)]


def test_each_fault_gets_the_gap_of_the_writes_that_ended_before_the_next_fault():
    # Fault 1 at 10 s: holds fail 10.0-11.0 (gap ~1 s). Fault 2 at 20 s: payments fail 20.0-23.0 (gap ~3 s),
    # holds keep working. A long stall of holds after 30 s belongs to nobody but the last window.
    ops = [*steady("reserve", 0, 10), *steady("reserve", 10, 11, outcome="unknown"), *steady("reserve", 11, 35),
           *steady("pay", 0, 20), *steady("pay", 20, 23, outcome="failed"), *steady("pay", 23, 35)]
    first, second = windows([10.0, 20.0])
    assert (first, second) == ((10.0, 20.0), (20.0, None))

    one = step_figures(ops, *first)
    two = step_figures(ops, *second)
    assert one["by_kind"]["reserve"]["write_gap_s"] == pytest.approx(1.05, abs=0.01)
    assert one["by_kind"]["pay"]["write_gap_s"] == 0.0  # the payments' gap is the second fault's
    assert one["write_gap_s"] == pytest.approx(1.05, abs=0.01)
    assert two["write_gap_s"] == pytest.approx(3.05, abs=0.01) and two["by_kind"]["reserve"]["write_gap_s"] == 0.0
    assert one["writes"]["unknown"] == 10 and one["writes"]["failed"] == 0
    assert two["writes"]["failed"] == 30 and two["writes"]["unknown"] == 0
    assert two["errors"] == {"503 None": 30}
    # Without the window the first fault would be charged the second's 3 s gap: `until` is what splits them.
    assert step_figures(ops, 10.0, None)["write_gap_s"] == pytest.approx(3.05, abs=0.01)


def test_writes_have_resumed_once_every_kind_succeeded_after_the_moment_given():
    history = History()
    history.ops += [Op("a", "reserve", 1, 5.0, 5.1, "ok"), Op("b", "pay", 1, 4.0, 6.0, "ok"),
                    Op("c", "pay", 1, 5.5, 5.6, "failed")]
    assert not writes_resumed(history, 4.5, {"reserve", "pay"})  # the pay that succeeded was sent before
    history.ops.append(Op("d", "pay", 2, 6.5, 6.6, "ok"))
    assert writes_resumed(history, 4.5, {"reserve", "pay"})
    assert not writes_resumed(history, 6.0, {"reserve", "pay"})


def report(**over) -> dict:
    base = {
        "drill": "chaos", "what": "w", "buyers": 2, "request_timeout_s": 3.0, "dwell_s": 5.0, "load_s": 40.0,
        "steps_asked": ["kill:billing", "mariadb-writer"],
        "steps": [{"step": "kill:billing", "status": "recovered", "at_s": 2.0, "time_to_detect_s": 0.2,
                   "recovery_s": 1.5, "write_gap_s": 0.4, "longest_stall_s": 0.6,
                   "writes": {"ok": 100, "failed": 1, "unknown": 0}},
                  {"step": "mariadb-writer", "status": "unavailable"}],
        "writes": {"total": 101, "ok": 100, "failed": 1, "unknown": 0}, "errors": {"503 X": 1},
        "audit": {"purchases": 50, "acknowledged_holds": 50, "acknowledged_purchases": 40, "lost": 0,
                  "duplicated": 0, "double_sold": 0,
                  "unknown": {"holds": {"applied": 0, "not_applied": 0}, "payments": {"applied": 0, "not_applied": 0}}},
        "all_sales_finalized": True, "lags_after": {"reservation -> billing": 0, "bridge -> portal (queue)": 0},
        "dead_letters": 0, "healthy_after": True, "problems_after": []}
    return {**base, **over}


def test_the_verdict_fails_on_an_unavailable_step_dead_letters_or_a_lag_and_the_table_says_so():
    r = report()
    r["failures"] = failures(r)
    assert r["failures"] == ["mariadb-writer: unavailable"] and not passed(r)
    text = render(r)
    assert "mariadb-writer" in text and "UNAVAILABLE" in text and "FAILED: mariadb-writer: unavailable" in text
    assert "kill:billing" in text and "0.40 s" in text and "dead letters 0" in text

    ok = report(steps_asked=["kill:billing"], steps=r["steps"][:1])
    ok["failures"] = failures(ok)
    assert ok["failures"] == [] and passed(ok) and "PASSED" in render(ok)
    for bad, why in (({"dead_letters": 2}, "dead letters: 2"), ({"dead_letters": None}, "dead letters: unknown"),
                     ({"lags_after": {"billing -> bridge": 3}}, "billing -> bridge lag 3"),
                     ({"steps_asked": ["kill:billing", "pg-failover"]}, "not run: pg-failover")):
        failing = report(**{"steps_asked": ["kill:billing"], "steps": r["steps"][:1], **bad})
        assert why in failures(failing), (bad, failures(failing))


# --- the drill on a private full HA stack -----------------------------------------------------------------

PORT_BLOCKS = {"ETCD_CLIENT_PORT": 3, "ETCD_PEER_PORT": 3, "PG_PORT": 3, "PATRONI_PORT": 3, "GALERA_PORT": 3,
               "GALERA_REPL_PORT": 3, "GALERA_IST_PORT": 3, "GALERA_SST_PORT": 3, "RABBITMQ_AMQP_PORT": 3,
               "RABBITMQ_DIST_PORT": 3, "RABBITMQ_CTL_PORT_MIN": 10}
PORTS = ("RW_PORT", "RO_PORT", "STATS_PORT", "MARIADB_WRITER_PORT", "RABBITMQ_EPMD_PORT")
DAEMON_PORTS = ("RESERVATION", "BILLING", "BRIDGE", "PORTAL", "BRIDGE_LINK")


@pytest.fixture(scope="module")
def supervised_ha(tmp_path_factory):
    """A full HA stack of its own (Galera and the RabbitMQ cluster on, every port private) with `run all
    --topology ha` supervising the daemons: billing on Galera's writer port, the bridge and portal on the
    cluster's nodes (the stack's own env: nothing explicit in the environment overrides it)."""
    root = tmp_path_factory.mktemp("chaos")
    # Nothing explicit from the environment (a DSN, an AMQP URL) may override the stack's own servers; the
    # shared local servers' settings (TICKETFLOW_STACK_*) are kept.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKETFLOW_") or k.startswith("TICKETFLOW_STACK_")}
    env.update({"TICKETFLOW_STACK_DIR": str(root), "TICKETFLOW_HA_STACK_DIR": str(root / "ha"),
                "TICKETFLOW_HA_SCOPE": f"chaos-{uuid.uuid4().hex[:6]}", "TICKETFLOW_HA_GALERA": "1",
                "TICKETFLOW_HA_RABBITMQ_NODES": "3",
                **{f"TICKETFLOW_HA_{name}": str(free_port_block(n)) for name, n in PORT_BLOCKS.items()},
                **{f"TICKETFLOW_HA_{name}": str(free_port()) for name in PORTS},
                **{f"TICKETFLOW_{name}_PORT": str(free_port()) for name in DAEMON_PORTS},
                "TICKETFLOW_RESERVATION_REPLICA_PORTS": f"{free_port()},{free_port()}",
                "TICKETFLOW_BILLING_REPLICA_PORTS": f"{free_port()},{free_port()}",
                "TICKETFLOW_BILLING_LINK_REPLICA_PORTS": f"{free_port()},{free_port()}"})

    started = time.monotonic()
    with supervised_ha_stack(env, root):
        print(f"\nprivate HA stack up and daemons supervised in {time.monotonic() - started:.0f} s")
        yield {"env": env, "root": root, "ticketflow": cli(env)}


async def count_orders(port: int) -> int:
    s = stack_settings()
    conn = await aiomysql.connect(host="127.0.0.1", port=port, user=s.user, password=s.password, db=s.database,
                                  connect_timeout=5)
    try:
        async with conn.cursor() as cur:
            await cur.execute("SELECT COUNT(*) FROM orders")
            return (await cur.fetchone())[0]
    finally:
        conn.close()


@pytest.mark.stack
@pytest.mark.slow
def test_chaos_drill_every_fault_in_turn_recovers_and_the_audit_finds_nothing(supervised_ha):
    status = json.loads(supervised_ha["ticketflow"]("status", "--topology", "ha", "--json").stdout)
    assert status["cluster"]["problems"] == [], status["cluster"]["problems"]

    steps = list(DEFAULT_STEPS)  # every fault the issue names: a missing one fails here, loudly
    assert all(s.startswith("kill:") or s in FAULTS for s in steps), steps
    out = supervised_ha["root"] / "chaos.json"
    result = supervised_ha["ticketflow"]("drill", "chaos", "--topology", "ha", "--duration", "2", "--buyers", "4",
                                         "--steps", ",".join(steps), "--json-out", str(out), timeout=600)
    print(result.stdout.split("\n\n")[0])
    assert out.exists(), result.stdout + result.stderr
    r = json.loads(out.read_text())

    a = r["audit"]
    assert (a["lost"], a["duplicated"], a["double_sold"]) == (0, 0, 0), a["details"]
    assert [s["step"] for s in r["steps"]] == steps
    assert r["failures"] == [] and result.returncode == 0, r["failures"]
    for step in r["steps"]:
        assert step["status"] == "recovered", step
        assert step["time_to_detect_s"] is not None and step["recovery_s"] is not None, step
        assert step["write_gap_s"] is not None, step  # every gap closed before the next fault
    assert a["acknowledged_purchases"] > 0
    assert set(r["lags_after"].values()) == {0} and len(r["lags_after"]) == 3, r["lags_after"]
    assert r["dead_letters"] == 0
    assert r["healthy_after"] and r["all_sales_finalized"], r["problems_after"]
    # The pipeline really ran on the clusters: billing's orders are on Galera (read through its writer port),
    # the portal's queue is a quorum queue of the RabbitMQ cluster.
    orders = asyncio.run(count_orders(int(supervised_ha["env"]["TICKETFLOW_HA_MARIADB_WRITER_PORT"])))
    assert orders >= a["acknowledged_purchases"], orders
    status = json.loads(supervised_ha["ticketflow"]("status", "--topology", "ha", "--json").stdout)
    assert Names("ticketflow").portal_queue in {q["name"] for q in status["cluster"]["rabbitmq"]["quorum_queues"]}
    kills = {s["step"]: s["facts"]["victims"][0] for s in r["steps"] if s["step"].startswith("kill:")}
    assert all(v["restarted"] for v in kills.values()), kills
    assert next(s for s in r["steps"] if s["step"] == "pg-failover")["facts"]["rejoined"]

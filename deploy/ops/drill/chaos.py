"""`ticketflow drill chaos`: every fault of the HA topology in turn, under ONE purchase load, one audit.

The steps (``DEFAULT_STEPS``, or a subset named with ``--steps``) are composed by name: ``kill:NAME``
(``faults.KillDaemon``: SIGKILL one daemon process, the supervisor restarts it) and every fault registered
in ``faults.FAULTS`` (``pg-failover``, and the Galera and RabbitMQ faults of
``deploy/ops/drill/cluster_faults.py``). A step named in issue 12 whose fault is not registered in this
checkout is reported ``unavailable`` and fails the drill: it is never silently left out.

Timeline, on the load's clock:

1. the stack must be recognised by every step's fault and healthy, or the drill refuses to start;
2. the load runs ``WARMUP`` seconds, then for each step: the fault is injected (step ``i`` starts at
   ``at_s``), it waits its own milestones and puts back what it broke (a killed node rejoins), then the
   drill waits until every component is healthy again ("recovered") and until clients' writes of every
   kind succeed again ("writes_resumed"), and at least ``dwell`` seconds after the injection; only then is
   the next fault injected. A step that does not recover ends the drill (later faults would prove nothing);
3. each step's client-visible write gap is read from the load's history between its injection and the
   next one (``audit.write_gaps(ops, since, until)``), so a fault's figures are its own;
4. the load stops, the pipeline drains, and ONE audit covers the whole run (lost, duplicated, double-sold,
   unknown outcomes resolved); every link's lag must be back to 0 and the dead-letter queue empty.
"""

from __future__ import annotations

import asyncio
import importlib
from collections import Counter
from dataclasses import dataclass
from functools import partial
from typing import Any

from deploy.ops.drill.audit import audit, write_gaps
from deploy.ops.drill.faults import FAULTS, Clock, DrillRefused, Fault, KillDaemon, Target
from deploy.ops.drill.load import History, Load
from deploy.ops.drill.run import WARMUP, health_problems, recognise

try:  # registers FAULTS["mariadb-writer"], FAULTS["mariadb-node"], FAULTS["rabbitmq-node"] where it exists
    importlib.import_module("deploy.ops.drill.cluster_faults")
except ModuleNotFoundError as exc:
    if exc.name != "deploy.ops.drill.cluster_faults":
        raise

DEFAULT_STEPS = ("kill:reservation", "kill:billing", "kill:bridge", "kill:portal", "pg-failover",
                 "mariadb-writer", "rabbitmq-node")
# Faults issue 12 names that a checkout may not have registered yet: reported "unavailable", not refused.
CLUSTER_FAULTS = ("mariadb-writer", "mariadb-node", "rabbitmq-node")
DWELL = 5.0  # seconds of load after each injection, at least
RECOVERY_TIMEOUT = 180.0
RESUME_TIMEOUT = 60.0


@dataclass(frozen=True)
class Step:
    name: str  # as the operator wrote it: "kill:billing", "pg-failover"
    fault: Fault | None  # None: its fault is not registered in this checkout ("unavailable")


def parse_steps(spec: str | None, faults: dict[str, Any] | None = None) -> list[Step]:
    """``kill:DAEMON,pg-failover,...`` (None or empty: ``DEFAULT_STEPS``) as steps, in the order given.

    ``kill:`` takes a daemon (reservation, billing, bridge, portal: its first replica) or a replica's name;
    anything else must be a registered fault, or one of ``CLUSTER_FAULTS`` (then ``unavailable``)."""
    faults = FAULTS if faults is None else faults
    names = [n.strip() for n in (spec or "").split(",") if n.strip()] or list(DEFAULT_STEPS)
    steps = []
    for name in names:
        if name.startswith("kill:"):
            daemon = name.removeprefix("kill:").strip()
            if not daemon:
                raise ValueError("kill: needs a daemon or replica name, e.g. kill:billing")
            steps.append(Step(f"kill:{daemon}", KillDaemon(daemon)))
        elif name in faults:
            steps.append(Step(name, faults[name]()))
        elif name in CLUSTER_FAULTS:
            steps.append(Step(name, None))
        else:
            known = sorted({*faults, *CLUSTER_FAULTS})
            raise ValueError(f"unknown chaos step {name!r}: kill:DAEMON or one of {', '.join(known)}")
    return steps


def windows(starts: list[float]) -> list[tuple[float, float | None]]:
    """Each injection's window on the load's clock: from it to the next one (the last: to the end)."""
    return [(start, starts[i + 1] if i + 1 < len(starts) else None) for i, start in enumerate(starts)]


def step_figures(ops: list[dict[str, Any]], since: float, until: float | None) -> dict[str, Any]:
    """The write gap, stall, write counts and errors of the writes that ended in [since, until)."""
    mine = [o for o in ops if o["t1"] >= since and (until is None or o["t1"] < until)]
    errors = Counter(f"{o['status'] or 'no answer'} {o['code']}" for o in mine if o["outcome"] != "ok")
    return {**write_gaps(ops, since, until),
            "writes": {k: sum(o["outcome"] == k for o in mine) for k in ("ok", "failed", "unknown")},
            "errors": dict(sorted(errors.items()))}


def writes_resumed(history: History, after: float, kinds: set[str]) -> bool:
    """Every kind of write has succeeded in a request sent at or after ``after`` (the load's clock)."""
    seen = {o.kind for o in history.ops if o.outcome == "ok" and o.t0 >= after}
    return kinds <= seen


async def run_chaos_drill(target: Target, steps: list[Step], dwell: float = DWELL, buyers: int = 6,
                          timeout: float = 3.0) -> dict[str, Any]:
    if not steps:
        raise DrillRefused("no chaos steps")
    for step in steps:
        if step.fault is not None:
            recognise(step.fault, target)
    before = await health_problems(target)
    if before:
        raise DrillRefused("the stack is not healthy before the drill: " + "; ".join(before))
    kinds = {"reserve", "pay"} if buyers else {"reserve"}
    load = Load(target.urls, target.token, buyers=buyers, timeout=timeout)
    results: list[dict[str, Any]] = []
    async with load.open():
        per_step = dwell + 40  # a fault's own rejoin waits included
        event_id, seats = await load.create_event(min(40_000, max(1000, int((buyers + load.probers) * 8 * (
            WARMUP + 30 + per_step * len(steps))))))
        buying = asyncio.create_task(load.run(seats))
        await asyncio.sleep(WARMUP)
        try:
            for step in steps:
                if buying.done():
                    results.append({"step": step.name, "status": "not run: the load ended (seats ran out "
                                    "or a buyer failed)"})
                    break
                if step.fault is None:
                    results.append({"step": step.name, "status": "unavailable",
                                    "what": "not registered in this checkout (deploy/ops/drill/cluster_faults.py)"})
                    continue
                result = await run_step(step, target, load, kinds, dwell)
                results.append(result)
                if result["status"] != "recovered":
                    break
        finally:
            load.stop()
            await asyncio.wait_for(buying, load.purchase_deadline * 3)
        load_s = load.history.now()
        settled = await load.settle()
        drain_clock = Clock()
        drained = await drain_clock.wait_for("drained", partial(_healthy, target, drained=True), 90)
        final = await load.final_state(event_id)
    ops, purchases = load.history.as_dicts()
    ran = [r for r in results if "at_s" in r]
    for result, (since, until) in zip(ran, windows([r["at_s"] for r in ran])):
        result.update(step_figures(ops, since, until))
    lags = await all_lags(target)
    dead_letters = lags.pop("dead letters", None)
    after = await health_problems(target, drained=True)
    errors = Counter(f"{o['status'] or 'no answer'} {o['code']}" for o in ops if o["outcome"] != "ok")
    report = {
        "drill": "chaos", "what": "every fault in turn under one purchase load, each recovered before the next",
        "buyers": buyers, "request_timeout_s": timeout, "dwell_s": dwell, "load_s": round(load_s, 1),
        "event_id": event_id, "steps_asked": [s.name for s in steps], "steps": results,
        "writes": {"total": len(ops), **{k: sum(o["outcome"] == k for o in ops) for k in ("ok", "failed", "unknown")}},
        "errors": dict(sorted(errors.items())),
        "audit": audit(purchases, final),
        # billing lists at most 1,000 orders of an event; beyond that every order a client knows of is read alone
        "orders_read_one_by_one": final.get("orders_fetched_one_by_one", 0),
        "all_sales_finalized": settled, "links_drained": drained, "drain_s": drain_clock.marks.get("drained"),
        "lags_after": lags, "dead_letters": dead_letters,
        "healthy_after": not after, "problems_after": after,
    }
    report["failures"] = failures(report)
    return report


async def run_step(step: Step, target: Target, load: Load, kinds: set[str], dwell: float) -> dict[str, Any]:
    """Inject one fault, wait for its milestones, for every component healthy and for clients' writes."""
    at = load.history.now()
    clock = Clock()
    result: dict[str, Any] = {"step": step.name, "what": step.fault.what, "at_s": round(at, 3)}
    try:
        result["facts"] = await step.fault.run(target, clock)
    except Exception as exc:  # a fault that could not finish is a failed step, reported; the stack is still read
        result["error"] = repr(exc)
    recovered = await clock.wait_for("recovered", partial(_healthy, target), RECOVERY_TIMEOUT)
    resumed = False
    if recovered:
        healthy_at = load.history.now()

        async def writing() -> bool:
            return writes_resumed(load.history, healthy_at, kinds)

        resumed = await clock.wait_for("writes_resumed", writing, RESUME_TIMEOUT)
    rest = dwell - clock.now()
    if rest > 0:
        await asyncio.sleep(rest)
    result.update({
        "status": "recovered" if recovered and resumed and "error" not in result else
        "failed" if "error" in result else "not recovered" if not recovered else "writes did not resume",
        "time_to_detect_s": clock.marks.get("detect"), "recovery_s": clock.marks.get("recovered"),
        "writes_resumed_s": clock.marks.get("writes_resumed"), "milestones_s": clock.marks,
    })
    if not recovered:
        result["problems"] = await health_problems(target)
    return result


async def all_lags(target: Target) -> dict[str, Any]:
    """Every link's lag and the dead-letter queue's depth (``status._lags``; ``run.link_lags`` drops the latter)."""
    from deploy.ops.status import _lags

    return await _lags(target.env)


async def _healthy(target: Target, drained: bool = False) -> bool:
    return not await health_problems(target, drained)


def failures(report: dict[str, Any]) -> list[str]:
    """Why the chaos drill failed (empty: it passed)."""
    out = [f"{s['step']}: {s['status']}" + (f" ({s['error']})" if s.get("error") else "")
           for s in report["steps"] if s["status"] != "recovered"]
    missing = report["steps_asked"][len(report["steps"]):]
    if missing:
        out.append("not run: " + ", ".join(missing))
    a = report["audit"]
    out += [f"{a[k]} {k.replace('_', '-')}" for k in ("lost", "duplicated", "double_sold") if a[k]]
    if not a["acknowledged_purchases"]:
        out.append("the load bought nothing: the drill proved nothing")
    if not report["all_sales_finalized"]:
        out.append("acknowledged sales not finalized")
    out += [f"{link} lag {lag}" for link, lag in report["lags_after"].items() if lag != 0]
    if report["dead_letters"] != 0:
        out.append(f"dead letters: {report['dead_letters'] if report['dead_letters'] is not None else 'unknown'}")
    out += [f"afterwards: {p}" for p in report["problems_after"]]
    return out

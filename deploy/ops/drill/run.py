"""Running a drill: refuse an unknown or unhealthy stack, drive the load, inject the fault, measure, audit.

Timeline (seconds on the fault's clock, 0 = the fault injected):

1. the stack must be recognised (the HA topology's servers running from this stack directory, the
   daemons' PostgreSQL being HAProxy's read-write port) and healthy, or the drill refuses to start;
2. the load runs ``WARMUP`` seconds before the fault, and until ``duration`` after it;
3. the fault runs (its own milestones: detect, new leader, rejoined, ...);
4. "recovered" is the first moment every component is healthy again: Patroni leader and sync standby,
   every node running on the leader's timeline, every HAProxy backend where it belongs, every daemon
   ready, every link connected;
5. the load stops, the pipeline drains (every acknowledged sale finalized, link lag 0), the final state is
   read back through the daemons' APIs and audited.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from collections import Counter
from typing import Any

from deploy.ops.drill.audit import audit, write_gaps
from deploy.ops.drill.faults import Clock, DrillRefused, Fault, Target, cluster_problems, ready
from deploy.ops.drill.load import Load, seed_concurrency

WARMUP = 2.0
QUEUE_LAG = "bridge -> portal (queue)"


async def link_lags(target: Target) -> dict[str, Any]:
    from deploy.ops.status import _lags

    lags = await _lags(target.env)
    lags.pop("dead letters", None)
    return lags


async def health_problems(target: Target, drained: bool = False) -> list[str]:
    """Everything that keeps the stack from healthy; ``drained``: links must also have lag 0."""
    problems: list[str] = []
    if target.topology is not None:
        try:
            problems += await asyncio.to_thread(cluster_problems, target.topology)
        except Exception as exc:  # a cluster report that cannot be read is a problem, not a crash
            problems.append(f"cluster report unreadable: {exc!r}")
    for name, url in target.urls.items():
        if not await asyncio.to_thread(ready, url + "/ready"):
            problems.append(f"{name} is not ready")
    for link, lag in (await link_lags(target)).items():
        if not isinstance(lag, int):
            problems.append(f"{link} lag {lag}")
        elif drained and lag:
            problems.append(f"{link} lag {lag}")
    return problems


def recognise(fault: Fault, target: Target) -> None:
    """Refuse a stack this drill does not know, or one that is not running from here."""
    if fault.needs_ha:
        topo = target.topology
        if topo is None:
            raise DrillRefused(f"{fault.name} needs the HA topology (ticketflow stack up --topology ha)")
        down = [s.name for s in topo.servers if not s.running()]
        if down:
            raise DrillRefused(f"the HA topology is not up from {topo.proxy.settings.root} "
                               f"(not running from here: {', '.join(down)}); refusing to touch it")
        if f":{topo.proxy.ha.rw_port}/" not in target.env.get("TICKETFLOW_PG_DSN", ""):
            raise DrillRefused("the daemons' PostgreSQL is not HAProxy's read-write port "
                               f"{topo.proxy.ha.rw_port}: run them with `ticketflow run all --topology ha`")
    fault.check(target)


async def run_fault_drill(fault: Fault, target: Target, duration: float = 15.0, buyers: int = 6,
                          timeout: float = 3.0) -> dict[str, Any]:
    recognise(fault, target)
    before = await health_problems(target)
    if before:
        raise DrillRefused("the stack is not healthy before the drill: " + "; ".join(before))
    load = Load(target.urls, target.token, buyers=buyers, timeout=timeout)
    async with load.open():
        event_id, seats = await load.create_event(min(20_000, max(500, int(buyers * (duration + WARMUP + 30) * 12))))
        buying = asyncio.create_task(load.run(seats))
        await asyncio.sleep(WARMUP)
        fault_at = load.history.now()
        clock = Clock()
        try:
            facts = await fault.run(target, clock)
            blockers: dict[str, float] = {}  # each problem seen while waiting: when last seen
            recovered = await clock.wait_for("recovered", partial(_healthy, target, seen=(blockers, clock)), 180)
            rest = duration - clock.now()
            if rest > 0:
                await asyncio.sleep(rest)
        finally:
            load.stop()
            await asyncio.wait_for(buying, load.purchase_deadline * 3)
        load_stopped = clock.now()
        settled = await load.settle()
        drained = await clock.wait_for("drained", partial(_healthy, target, drained=True), 90)
        final = await load.final_state(event_id)
    ops, purchases = load.history.as_dicts()
    after = await health_problems(target, drained=True)
    errors = Counter(f"{o['status'] or 'no answer'} {o['code']}" for o in ops if o["outcome"] != "ok")
    return {
        "drill": fault.name, "what": fault.what, "buyers": buyers, "request_timeout_s": timeout,
        "load_s": round(load_stopped + fault_at, 1), "event_id": event_id,
        "writes": {"total": len(ops), "ok": sum(o["outcome"] == "ok" for o in ops),
                   "failed": sum(o["outcome"] == "failed" for o in ops),
                   "unknown": sum(o["outcome"] == "unknown" for o in ops)},
        "time_to_detect_s": clock.marks.get("detect"),
        **write_gaps(ops, since=fault_at),
        "recovery_s": clock.marks.get("recovered") if recovered else None,
        "milestones_s": clock.marks, "facts": facts, "recovery_blockers_s": blockers,
        "errors": dict(sorted(errors.items())),
        "audit": audit(purchases, final),
        **({"victims": per_victim(facts["victims"], ops, fault_at)} if "victims" in facts else {}),
        "all_sales_finalized": settled, "links_drained": drained,
        "healthy_after": not after, "problems_after": after,
    }


def per_victim(victims: list[dict[str, Any]], ops: list[dict[str, Any]], fault_at: float) -> list[dict[str, Any]]:
    """Each killed process's facts with the writes clients saw fail meanwhile: every write that failed or got
    no answer after the fault counts against the last process killed before it ended; ``retried_ok`` says
    whether the same purchase's next attempt of that write succeeded (the one retry a client makes)."""
    out = [{**v, "failed_writes": 0, "failed_then_retried_ok": 0} for v in victims]
    attempts = {(o["purchase"], o["kind"], o["attempt"]): o for o in ops}
    for o in ops:
        if o["outcome"] == "ok" or o["t1"] < fault_at:
            continue
        owner = [v for v in out if fault_at + v["killed_at_s"] <= o["t1"]]
        if not owner:
            continue
        owner[-1]["failed_writes"] += 1
        retry = attempts.get((o["purchase"], o["kind"], o["attempt"] + 1))
        owner[-1]["failed_then_retried_ok"] += bool(retry and retry["outcome"] == "ok")
    return out


async def _healthy(target: Target, drained: bool = False, seen: tuple[dict[str, float], Clock] | None = None) -> bool:
    problems = await health_problems(target, drained)
    if seen is not None:  # what kept the stack from healthy, and until when (the report's recovery_blockers_s)
        blockers, clock = seen
        blockers.update({problem: round(clock.now(), 2) for problem in problems})
    return not problems


async def run_seed_concurrency(target: Target, n: int = 10) -> dict[str, Any]:
    if not await asyncio.to_thread(ready, target.urls["reservation"] + "/ready"):
        raise DrillRefused(f"the reservation daemon is not ready at {target.urls['reservation']}")
    started = time.monotonic()
    result = await seed_concurrency(target.urls, target.token, n)
    return {"drill": "seed-concurrency", "what": f"{n} simultaneous holds of one seat; exactly one may win",
            **result, "exactly_one_winner": result["winners"] == 1 and result["seat_status"] == "held",
            "duration_s": round(time.monotonic() - started, 2)}

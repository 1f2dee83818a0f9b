"""The faults of the HA topology's other clusters: a Galera node (the writer, or not) and a RabbitMQ node.

Registered in ``faults.FAULTS`` as ``mariadb-writer``, ``mariadb-node`` and ``rabbitmq-node`` (the chaos
drill composes faults by those names). Each is a :class:`~deploy.ops.drill.faults.Fault`: ``run(target,
clock)`` SIGKILLs its victim, waits for the milestones that show the cluster noticed, restarts the victim
and waits until it has rejoined; ``check(target)`` refuses a stack whose daemons do not use that cluster.

Galera: the victim is restarted through ``GaleraCluster.up(writer)``, which recovers its position
(``--wsrep-recover``) so it rejoins by IST, and names its SST donors among the nodes that are not the writer
(an rsync donor is blocked, and HAProxy's check marks it down: a writer donor would stop the writes).
Whether the rejoin took IST or a full SST is read from the victim's log.

RabbitMQ: the victim is the node leading the portal's quorum queue: every publish to that queue is
confirmed by its leader, so its loss is what stalls publishing (a new leader is elected among the other two
members). The daemons connect to the first node of their list that answers, so on a fresh stack that leader
is also the node the bridge and the portal are connected to (the queue's leader is placed on the node of the
client that declared it): the kill costs them their connection too, and the report says how many of the
daemons' connections the victim carried. The publishing stall is measured on billing's side of the bridge
link: billing's acknowledged position of the ``payments`` stream moves only when the bridge has had the
publishes confirmed by RabbitMQ, so "billing has payments waiting and the acknowledged position does not
move" is exactly "the bridge cannot get publishes confirmed" (see :func:`publish_stall`).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from typing import Any

from deploy.ops.drill.faults import (
    FAULTS,
    Clock,
    DrillRefused,
    Fault,
    Target,
    _sigkill,
    backend_status,
)
from deploy.ops.stack import process
from deploy.ops.stack.galera import GaleraNode
from deploy.ops.stack.rabbitmq_cluster import RabbitNode
from deploy.ops.stack.server import StackError
from deploy.runtime.amqp import Names, url_list

WRITER_PROXY = "mariadb_writer"
SAMPLE_EVERY = 0.05  # billing's stream position while a RabbitMQ node is down


# --- Galera ----------------------------------------------------------------------------------------


_DONOR = re.compile(r"Selected \S+ \(([^)]+)\)\(\w+\) as donor")


def state_transfer(log: str) -> dict[str, str | None]:
    """How a (re)starting Galera node caught up, from its log since the start: ``{"by": "IST" | "SST" |
    "none", "donor": node name or None}``. A node whose recovered position is still in a donor's gcache
    receives only the missing write sets (IST); otherwise the whole data directory (SST, by rsync)."""
    donor = _DONOR.findall(log)
    # MariaDB runs its SST script for an IST too ("rsync SST started on joiner" ... "SST received", with the
    # state dump bypassed): the script's own last word on the joiner says which of the two it was.
    mode = re.findall(r"rsync (SST|IST) completed on joiner", log)
    if mode:
        by = mode[-1]
    elif re.search(r"Receiving IST|IST received", log):
        by = "IST"
    elif re.search(r"SST received", log):
        by = "SST"
    else:
        by = "none"
    return {"by": by, "donor": donor[-1] if donor else None}


def _galera(target: Target):
    topology = target.topology
    return topology.galera if topology is not None else None


def _check_galera(target: Target) -> None:
    galera = _galera(target)
    if galera is None:
        raise DrillRefused("the HA topology runs no Galera cluster (TICKETFLOW_HA_GALERA=0)")
    port = galera.ha.mariadb_writer_port
    if f":{port}/" not in target.env.get("TICKETFLOW_MARIADB_DSN", ""):
        raise DrillRefused(f"billing's MariaDB is not HAProxy's Galera writer port {port}: run the daemons with "
                           "`ticketflow run all --topology ha`")
    down = [n.name for n in galera.nodes if not n.running()]
    if down:
        raise DrillRefused(f"Galera nodes not running from here: {', '.join(down)}")


def _galera_node(target: Target, name: str) -> GaleraNode:
    return next(n for n in _galera(target).nodes if n.name == name)


def _synced_in_full_cluster(node: GaleraNode, size: int) -> bool:
    report = node.report()
    return report.get("local_state") == 4 and report.get("cluster_status") == "Primary" \
        and report.get("cluster_size") == size


async def _kill_galera_node(target: Target, victim: GaleraNode, clock: Clock) -> dict[str, Any]:
    pid = victim.pid()
    killed = _sigkill(pid)
    await asyncio.to_thread(process.wait_exit, victim.pidfile, 10.0)
    return {"victim": victim.name, "pid": pid, "killed": killed, "killed_at_s": clock.now()}


async def _rejoin_galera_node(target: Target, victim: GaleraNode, writer: str | None, clock: Clock,
                              facts: dict[str, Any]) -> None:
    """Restart ``victim`` the way ``stack up`` does (its recovered position, donors that are not the writer),
    then wait until it is Synced in a cluster of all nodes and HAProxy has it UP again."""
    galera = _galera(target)
    topology = target.topology
    offset = victim.logfile.stat().st_size if victim.logfile.exists() else 0
    started = await asyncio.to_thread(galera.up, writer)
    clock.mark("restarted")  # galera.up returns once the node answers as Synced in the Primary component
    log = victim.logfile.read_text(errors="replace")[offset:] if victim.logfile.exists() else ""
    facts["restart"] = started.get(victim.name)
    facts["rejoin"] = state_transfer(log)
    facts["donors_allowed"] = victim.donors
    facts["rejoined"] = await clock.wait_for(
        "rejoined", lambda: _synced_in_full_cluster(victim, len(galera.nodes)), 60)
    facts["up_in_haproxy"] = await clock.wait_for(
        "up_in_haproxy", lambda: backend_status(topology, WRITER_PROXY, victim.name) == "UP", 30)
    facts["writer_after"] = await asyncio.to_thread(galera.writer)


class MariadbWriter(Fault):
    name = "mariadb-writer"
    what = "SIGKILL the Galera node HAProxy's writer port routes to; restart it (IST) and let it rejoin"

    def check(self, target: Target) -> None:
        _check_galera(target)  # a writer routed: the drill's health check before it starts

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        galera, topology = _galera(target), target.topology
        old = await asyncio.to_thread(galera.writer)
        victim = _galera_node(target, old)
        facts = await _kill_galera_node(target, victim, clock)

        def out_of_haproxy() -> bool:  # marked DOWN by its check (or already routed elsewhere)
            return not (backend_status(topology, WRITER_PROXY, old) or "").startswith("UP")

        await asyncio.gather(clock.wait_for("detect", out_of_haproxy, 30),
                             clock.wait_for("writer_routed", lambda: galera.writer() not in (None, old), 30))
        new = await asyncio.to_thread(galera.writer)
        facts["new_writer"] = new
        await _rejoin_galera_node(target, victim, new, clock, facts)
        facts["writer_flapped_back"] = facts["writer_after"] == old
        return facts


class MariadbNode(Fault):
    name = "mariadb-node"
    what = "SIGKILL a Galera node that is not the writer; writes go on; restart it and let it rejoin"

    def check(self, target: Target) -> None:
        _check_galera(target)

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        galera, topology = _galera(target), target.topology
        writer = await asyncio.to_thread(galera.writer)
        # The last non-writer: on a fresh stack galera1 is the writer (HAProxy's first UP server), so the
        # victim is galera3 and its rejoin's donor galera2 -- never the writer.
        victim = [n for n in galera.nodes if n.name != writer][-1]
        facts = await _kill_galera_node(target, victim, clock)
        facts["writer"] = writer
        await asyncio.gather(
            clock.wait_for("detect", lambda: not (backend_status(topology, WRITER_PROXY, victim.name)
                                                  or "").startswith("UP"), 30),
            clock.wait_for("evicted", lambda: _galera_node(target, writer).report().get("cluster_size")
                           == len(galera.nodes) - 1, 30))
        await _rejoin_galera_node(target, victim, writer, clock, facts)
        facts["writer_moved"] = facts["writer_after"] != writer
        return facts


# --- RabbitMQ --------------------------------------------------------------------------------------


def _rabbit(target: Target):
    topology = target.topology
    return topology.rabbit if topology is not None else None


def _names(target: Target) -> Names:
    return Names(target.env.get("TICKETFLOW_AMQP_PREFIX", "ticketflow"))


STALL_GOAL_S = 1.0  # issue 12: under 1 s of stalled publishing on a RabbitMQ node kill


def publish_stall(samples: list[tuple[float, int, int]], since: float = 0.0) -> dict[str, Any]:
    """The publishing stall, from samples ``(t, acked_seq, lag)`` of billing's ``payments`` stream.

    Billing's acknowledged position moves only when the bridge had RabbitMQ confirm the publishes, so a
    stretch in which billing had payments waiting (``lag > 0``) and the position did not move is a stretch
    in which no publish got confirmed. ``stall_s``: the longest such stretch after ``since``, from the first
    sample that saw payments waiting to the first that saw the position move (resolution: the sampling
    interval); one still open at the last sample counts up to it (``unresolved``); ``resumed_s``: when the
    longest one ended. ``typical_s``: the
    median of the other stretches, what a payment waits for its confirm when nothing is broken."""
    stretches: list[float] = []
    start: float | None = None
    previous: int | None = None
    resumed: float | None = None
    for t, acked, lag in samples:
        if previous is not None and acked != previous and start is not None:
            stretches.append(t - start)
            if t - start >= max(stretches):
                resumed = t
            start = None
        previous = acked
        if start is None and lag > 0 and t >= since:
            start = t
    # A stretch still open at the last sample: under load the stream usually has a payment in flight when sampling
    # stops, so an open stretch shorter than a resolved stall (or than the 1 s goal) is that ordinary wait, not a
    # stall; with no confirm at all since the fault, or a longer wait than every resolved one, it is unresolved.
    open_for = samples[-1][0] - start if start is not None and samples else None
    unresolved = open_for is not None and (not stretches or (open_for > max(stretches) and open_for >= STALL_GOAL_S))
    if unresolved:
        stretches.append(open_for)
    longest = max(stretches, default=0.0)
    others = sorted(stretches)[:-1]
    return {"stall_s": round(longest, 3), "unresolved": unresolved,
            "resumed_s": None if unresolved or not stretches else round(resumed, 3),
            "typical_s": round(others[len(others) // 2], 3) if others else None, "stretches": len(stretches)}


class _StreamSampler:
    """Billing's ``payments`` stream state every ``SAMPLE_EVERY`` s on the fault's clock, until stopped."""

    def __init__(self, target: Target, clock: Clock) -> None:
        self.target, self.clock = target, clock
        self.samples: list[tuple[float, int, int]] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        from billing_daemon.config import Settings as BillingSettings
        from billing_daemon.store import BillingStore
        from deploy.runtime.config import load
        from deploy.runtime.mysql import MariaDB

        db = MariaDB(load(BillingSettings, self.target.env).mariadb_dsn, max_size=1, connect_timeout=3,
                     command_timeout=3)
        await db.start()
        try:
            store = BillingStore(db)
            while not self.stopping.is_set():
                t = self.clock.now()
                try:
                    state = await store.stream_state()
                except Exception:  # noqa: BLE001 -- MariaDB is not the fault here; a missed sample coarsens the figure
                    state = None
                if state is not None:
                    self.samples.append((t, int(state["acked_seq"]), int(state["lag"])))
                try:
                    await asyncio.wait_for(self.stopping.wait(), SAMPLE_EVERY)
                except TimeoutError:
                    pass
        finally:
            await db.close()


def _queue(rabbit, name: str) -> dict[str, Any] | None:
    return next((q for q in rabbit.quorum_queues() if q["name"] == name), None)


def connections_on(node: RabbitNode, rabbit) -> int | None:
    """How many AMQP client connections the cluster has on ``node`` (asked through a running node)."""
    for other in rabbit.nodes:
        if not other.running():
            continue
        try:
            rows = json.loads(other.ctl("list_connections", "--formatter", "json", "port"))
        except (StackError, subprocess.TimeoutExpired, ValueError):
            continue  # that node cannot answer: ask the next
        return sum(1 for r in rows if r.get("port") == node.settings.amqp_port)  # the AMQP port they came in on
    return None


async def dead_letters(target: Target) -> int | None:
    """Messages in the portal's dead-letter queue, asked of the first node of the daemons' list that answers."""
    import aio_pika

    names = _names(target)
    for url in url_list(target.env.get("TICKETFLOW_AMQP_URL", ""), target.env.get("TICKETFLOW_AMQP_URLS", "")):
        try:
            connection = await aio_pika.connect(url, timeout=3)
        except Exception:  # noqa: BLE001,S112 -- a node that does not answer: try the next
            continue
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(names.dead_letter_queue, passive=True)
            return queue.declaration_result.message_count
        except Exception:  # noqa: BLE001 -- no such queue (yet), or the node went away: not known
            return None
        finally:
            await connection.close()
    return None


class RabbitmqNode(Fault):
    name = "rabbitmq-node"
    what = ("SIGKILL the RabbitMQ node leading the portal's quorum queue (where the daemons are connected); "
            "restart it and let it rejoin the cluster")

    def check(self, target: Target) -> None:
        rabbit = _rabbit(target)
        if rabbit is None:
            raise DrillRefused("the HA topology runs no RabbitMQ cluster (TICKETFLOW_HA_RABBITMQ_NODES=0)")
        listed = target.env.get("TICKETFLOW_AMQP_URLS", "")
        missing = [n.name for n in rabbit.nodes if f":{n.settings.amqp_port}/" not in listed]
        if missing:
            raise DrillRefused(f"the daemons' AMQP URLs (TICKETFLOW_AMQP_URLS) do not list the cluster's nodes "
                               f"{', '.join(missing)}: run them with `ticketflow run all --topology ha`")
        down = [n.name for n in rabbit.nodes if not n.running()]
        if down:
            raise DrillRefused(f"RabbitMQ nodes not running from here: {', '.join(down)}")
        queue = _queue(rabbit, _names(target).portal_queue)
        if queue is None or not queue["leader"]:
            raise DrillRefused(f"the portal's quorum queue {_names(target).portal_queue} has no leader "
                               "(is the portal running on this cluster?)")

    async def run(self, target: Target, clock: Clock) -> dict[str, Any]:
        rabbit, queue_name = _rabbit(target), _names(target).portal_queue
        victim = await asyncio.to_thread(rabbit.leader_of, queue_name)
        connections = await asyncio.to_thread(connections_on, victim, rabbit)
        sampler = _StreamSampler(target, clock)
        sampling = asyncio.create_task(sampler.run())
        try:
            pid = victim.pid()
            facts: dict[str, Any] = {"victim": victim.name, "node": victim.node, "pid": pid,
                                     "led": queue_name, "daemon_connections_on_victim": connections,
                                     "killed": _sigkill(pid), "killed_at_s": clock.now()}
            await asyncio.to_thread(process.wait_exit, victim.pidfile, 10.0)

            def gone() -> bool:  # the cluster no longer counts it among its running nodes
                return victim.node not in rabbit.running_nodes()

            def new_leader() -> bool:  # Raft elected one among the other members
                queue = _queue(rabbit, queue_name)
                return bool(queue and queue["leader"] and queue["leader"] != victim.node)

            async def watch_cluster() -> None:  # one rabbitmqctl at a time: each starts an Erlang VM
                await clock.wait_for("detect", gone, 30)
                await clock.wait_for("new_leader", new_leader, 30)
                facts["new_leader"] = (await asyncio.to_thread(_queue, rabbit, queue_name) or {}).get("leader")

            async def watch_publishing() -> None:  # from the samples, so the mark is when it happened
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    stall = publish_stall(sampler.samples, since=facts["killed_at_s"])
                    if stall["resumed_s"] is not None:
                        clock.marks.setdefault("publishing_resumed", stall["resumed_s"])
                        return
                    await asyncio.sleep(SAMPLE_EVERY)

            await asyncio.gather(watch_cluster(), watch_publishing())

            async def restart() -> None:
                started = time.monotonic()
                await asyncio.to_thread(victim.up)  # a node with data rejoins its cluster by itself
                clock.mark("restarted")
                facts["restart_s"] = round(time.monotonic() - started, 3)

            await restart()

            def rejoined() -> bool:
                queue = _queue(rabbit, queue_name)
                return victim.node in rabbit.running_nodes() and bool(
                    queue and victim.node in queue["online"] and queue["online"] == queue["members"])

            facts["rejoined"] = await clock.wait_for("rejoined", rejoined, 60)
        finally:
            sampler.stopping.set()
            await sampling
        facts["publishing"] = publish_stall(sampler.samples, since=facts["killed_at_s"])
        facts["samples"] = len(sampler.samples)
        facts["dead_letters"] = await dead_letters(target)
        return facts


FAULTS.update({"mariadb-writer": MariadbWriter, "mariadb-node": MariadbNode, "rabbitmq-node": RabbitmqNode})


def describe(facts: dict[str, Any]) -> list[str]:
    """The report's lines for a Galera or RabbitMQ fault's facts (none for other faults)."""
    lines = []
    if "rejoin" in facts:  # a Galera node
        rejoin = facts["rejoin"]
        lines.append(f"  galera victim            {facts['victim']}"
                     + (f" (the writer; writes moved to {facts['new_writer']})" if "new_writer" in facts else
                        f" (not the writer {facts['writer']})")
                     + f"; rejoined {'yes' if facts['rejoined'] else 'NO'} by {rejoin['by']}"
                     + (f" from {rejoin['donor']}" if rejoin["donor"] else "")
                     + f"; writer afterwards {facts['writer_after']}")
    if "publishing" in facts:  # a RabbitMQ node
        p = facts["publishing"]
        lines.append(f"  rabbitmq victim          {facts['victim']} ({facts['node']}), leader of {facts['led']}, "
                     f"{facts['daemon_connections_on_victim']} client connections on it; new leader "
                     f"{facts['new_leader']}; rejoined {'yes' if facts['rejoined'] else 'NO'}")
        lines.append(f"  publishing stall         {p['stall_s']:.2f} s"
                     + (" (STILL STALLED at the end)" if p["unresolved"] else "")
                     + "   (billing's payments waiting, no publish confirmed; typical wait "
                     + (f"{p['typical_s']:.2f} s" if p["typical_s"] is not None else "-")
                     + f"); dead letters {facts['dead_letters']}")
    return lines

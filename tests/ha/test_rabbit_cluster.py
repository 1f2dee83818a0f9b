"""RabbitMQ x3 (the HA topology's broker) on private ports: the cluster forms, the queues are quorum queues with
three members, and killing the node that leads the portal's queue under a publish load loses nothing.

The test plays billing (a protocol Sender feeding a real bridge process) and runs the portal's real Consumer
in-process with a finalizer that records what it is handed. The bridge and the consumer are given the node
list leader-first, so the kill takes their node away and they must move to a live one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections import Counter

import aio_pika
import pytest

from bridge_daemon.streams import IN_STREAM
from deploy.ops.stack.rabbitmq_cluster import RabbitCluster
from deploy.ops.stack.settings import HASettings, stack_settings
from deploy.ops.stack.topology import format_rabbit, report_problems
from deploy.runtime.amqp import Names, declare_topology, position_queue_arguments
from portal_consumer.config import Settings as PortalSettings
from portal_consumer.streams import Consumer
from tests.bridge.test_bridge import payments, sender_for
from tests.helpers import ListSource, wait_until
from tests.support.daemons import DaemonProcess
from tests.support.stack import free_port, free_port_block

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("rabbit-ha")
    ha = HASettings(rabbit_amqp_port=free_port_block(3), rabbit_dist_port=free_port_block(3),
                    rabbit_epmd_port=free_port(), rabbit_ctl_port_min=free_port_block(10))
    rabbit = RabbitCluster(dataclasses.replace(stack_settings(), root=root), ha)
    try:
        rabbit.up()
        yield rabbit
    finally:
        rabbit.down()


class Recorder:
    """The portal's finalizer, reduced to remembering every event it is handed (the real one dedupes by id)."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.times: list[float] = []

    async def handle(self, event: dict) -> None:
        self.handled.append(event["id"])
        self.times.append(time.monotonic())


def test_the_cluster_forms_with_three_running_nodes(cluster):
    assert len(cluster.running_nodes()) == 3, cluster.cluster_status()
    report = cluster.report()
    assert [n["running"] for n in report["nodes"]] == [True, True, True]
    assert cluster.env()["TICKETFLOW_AMQP_URLS"].count(",") == 2
    assert "rabbitmq cluster:" in format_rabbit(report)[0]


async def test_a_queue_leader_kill_under_load_loses_nothing_and_both_sides_move_to_a_live_node(cluster, tmp_path):
    names = Names(f"tf-rabbit-{uuid.uuid4().hex[:8]}")
    connection = await aio_pika.connect(cluster.nodes[0].url())
    await declare_topology(await connection.channel(), names, dead_letter_arguments={"x-queue-type": "quorum"})
    await connection.close()
    leader = cluster.leader_of(names.portal_queue)
    urls = [leader.url(), *(n.url() for n in cluster.nodes if n is not leader)]  # the victim first

    http_port, link_port = free_port(), free_port()
    bridge = DaemonProcess("bridge_daemon", {
        "TICKETFLOW_AMQP_URLS": ",".join(urls), "TICKETFLOW_AMQP_PREFIX": names.prefix,
        "TICKETFLOW_BRIDGE_PORT": str(http_port), "TICKETFLOW_BRIDGE_LINK_PORT": str(link_port),
    }, tmp_path / "bridge.log", ready_url=f"http://127.0.0.1:{http_port}/ready")
    await bridge.start_ready()
    recorder = Recorder()
    consumer = Consumer(PortalSettings(amqp_urls=",".join(urls), amqp_prefix=names.prefix), recorder)
    consuming = asyncio.create_task(consumer.run())
    source = ListSource([])
    sender, sending = sender_for(link_port, source)
    total, step = 1200, 20
    try:
        queues = {q["name"]: q for q in cluster.quorum_queues()}
        for name in (names.portal_queue, names.position_queue(IN_STREAM), names.dead_letter_queue):
            await wait_until(lambda: name in {q["name"] for q in cluster.quorum_queues()}, 20, f"{name} declared")
            queues = {q["name"]: q for q in cluster.quorum_queues()}
            assert len(queues[name]["members"]) == 3, queues[name]  # a quorum queue on every node

        async def feed() -> None:  # a small steady load: 20 payments every 20 ms
            for start in range(1, total + 1, step):
                source.events += payments(start, step)
                sender.notify()
                await asyncio.sleep(0.02)

        feeding = asyncio.create_task(feed())
        await wait_until(lambda: len(set(recorder.handled)) >= total // 3, 30, "a third of the load consumed")
        killed_at = time.monotonic()
        assert leader.kill(), "the leader's process was not running"
        await feeding
        await wait_until(lambda: sender.acked == total, 60, f"all {total} payments confirmed and acked")
        await wait_until(lambda: len(set(recorder.handled)) == total, 60, "every payment consumed")

        sent = [e.id for e in source.events]
        assert set(recorder.handled) == set(sent), "a payment was lost (or an unknown one appeared)"
        duplicates = sum(c - 1 for c in Counter(recorder.handled).values())
        after = [t for t in recorder.times if t >= killed_at]
        stall = max((b - a for a, b in zip([killed_at, *after], after)), default=0.0)
        print(f"\nqueue leader {leader.node} killed: longest pause in consumption {stall:.2f} s, "
              f"{duplicates} redeliveries (same message ids, dropped by the portal's dedupe)")
        assert consumer.connected and consumer.nodes.label != f"127.0.0.1:{leader.settings.amqp_port}"
        new_leader = cluster.leader_of(names.portal_queue)
        assert new_leader is not leader and new_leader.running()
        log = (tmp_path / "bridge.log").read_text()
        assert log.count('"broker_connected"') >= 2, "the bridge never reconnected"
        problems = report_problems({"postgres": [{"role": "leader"}, {"role": "sync_standby"}], "etcd": [{"name": "etcd1", "healthy": True}],
                                    "haproxy": [{"proxy": "postgres_rw", "server": "pg1", "status": "UP"}],
                                    "rabbitmq": cluster.report()})
        assert problems == [f"RabbitMQ nodes not running in the cluster: {leader.name}"], problems
    finally:
        await sender.stop()
        sending.cancel()
        await consumer.stop()
        consuming.cancel()
        await asyncio.gather(consuming, return_exceptions=True)
        bridge.kill()
    await asyncio.to_thread(leader.up)  # rejoins the cluster
    assert await asyncio.to_thread(cluster.wait_formed) == "3 nodes running"


async def test_a_classic_position_queue_from_before_becomes_a_quorum_queue_keeping_its_record():
    """An existing local stack (one node) migrates: the bridge's old classic position queue is converted."""
    from deploy.runtime.amqp import declare_position_queue
    from tests.support.stack import stack_env

    name = Names(f"tf-rabbit-{uuid.uuid4().hex[:8]}").position_queue(IN_STREAM)
    connection = await aio_pika.connect(stack_env()["TICKETFLOW_AMQP_URL"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=True, arguments={"x-max-length": 1, "x-overflow": "drop-head"})
        await channel.default_exchange.publish(aio_pika.Message(b'{"stream":"payments","position":41}'),
                                               routing_key=name)
        await declare_position_queue(connection, name)
        await declare_position_queue(connection, name)  # idempotent once converted
        channel = await connection.channel()
        queue = await channel.declare_queue(name, durable=True, arguments=position_queue_arguments())  # quorum now
        message = await queue.get(no_ack=True, fail=False, timeout=5)
        assert message is not None and message.body == b'{"stream":"payments","position":41}'
        await channel.queue_delete(name)
    finally:
        await connection.close()

"""The operators' console's API on the portal (README "The operators' console"): access (operator only),
status and lag read through `ticketflow status`, a real dead letter listed, inspected (secrets redacted),
requeued to the portal's queue and discarded, a drill started from the console refusing on the
single-node stack with its refusal streamed, and one drill at a time."""

import json

import aio_pika
import aiohttp
import pytest

from tests.helpers import wait_until
from tests.support.auth import token

OPERATOR = token("operator", subject="op-ann")
OPS_GETS = ["/api/ops/status", "/api/ops/lag", "/api/ops/dead-letters", "/api/ops/dead-letters/x",
            "/api/ops/drills", "/api/ops/drills/20260101T000000Z-pg-failover"]
OPS_POSTS = ["/api/ops/dead-letters/x/requeue", "/api/ops/dead-letters/x/discard",
             "/api/ops/drills/pg-switchover/run"]


@pytest.fixture
async def console(full, tmp_path):
    await full.start_with_console(tmp_path / "drills", TICKETFLOW_PORTAL_OPS_SAMPLE_SECONDS="0.5")
    full.drill_dir = tmp_path / "drills"
    full.ops = full["portal"].api.as_(OPERATOR)
    return full


async def test_only_an_operator_reaches_the_console(console):
    portal = console["portal"].api
    for caller, want in ((None, 401), ("buyer", 403), ("door", 403), ("organizer", 403), ("service", 403)):
        client = portal.as_(token(caller) if caller else None)
        for path in OPS_GETS:
            reply = await client.get(path)
            assert reply.status == want, (caller, path, reply.status, reply.body)
        for path in OPS_POSTS:
            reply = await client.post(path)
            assert reply.status == want, (caller, path, reply.status, reply.body)
    # The page itself is public (its data is not):
    async with console.session.get(portal.base_url + "/ops") as page:
        assert page.status == 200 and "operators' console" in await page.text()
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]


async def test_status_shows_every_daemon_up_and_the_lag_is_sampled(console):
    status = await console.ops.get("/api/ops/status")
    assert status.status == 200, status.body
    daemons = status.body["report"]["daemons"]
    assert {name: d["state"] for name, d in daemons.items()} == {
        "reservation": "up", "billing": "up", "bridge": "up", "portal": "up"}, daemons
    assert daemons["portal"]["url"] == console["portal"].api.base_url
    assert set(status.body["report"]["servers"]) >= {"postgres", "mariadb", "rabbitmq"}

    async def sampled() -> bool:
        samples = (await console.ops.get("/api/ops/lag")).body["samples"]
        return len(samples) >= 2 and samples[-1]["lag"].get("reservation -> billing") == 0 \
            and samples[-1]["lag"].get("dead letters") == 0
    await wait_until(sampled, 20, "two lag samples of this pipeline's links")


async def _dead_letters(console) -> dict:
    reply = await console.ops.get("/api/ops/dead-letters")
    assert reply.status == 200, reply.body
    return reply.body


async def test_a_dead_letter_is_listed_inspected_requeued_and_discarded(console):
    connection = await aio_pika.connect(console.amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.get_exchange(console.names.exchange)
        broken = {"specversion": "1.0", "id": "dl-1", "type": "payment.succeeded", "source": "test",
                  "data": {"order_id": "o-1", "token": "eyJhbGciOi.secretpart1.secretpart2", "note": "kept"}}
        await exchange.publish(aio_pika.Message(json.dumps(broken).encode(), message_id="dl-1",
                                                type="payment.succeeded"), routing_key="payment.succeeded")
    finally:
        await connection.close()
    await wait_until(lambda: _count(console, 1), 15, "the malformed message dead-lettered by the portal")
    listed = (await _dead_letters(console))["dead_letters"]
    assert [d["id"] for d in listed] == ["dl-1"] and listed[0]["reason"], listed

    shown = await console.ops.get("/api/ops/dead-letters/dl-1")
    assert shown.status == 200, shown.body
    assert shown.body["headers"]["x-ticketflow-reason"] and shown.body["body_encoding"] == "json"
    assert shown.body["body"]["data"] == {"order_id": "o-1", "token": "[redacted]", "note": "kept"}
    assert "secretpart" not in json.dumps(shown.body)
    assert (await _dead_letters(console))["count"] == 1, "inspecting must leave the message in the queue"

    # Requeued to the portal's queue, the portal reads it again; still malformed, it is dead-lettered
    # again, now carrying who requeued it: proof it went through the portal's queue.
    requeued = await console.ops.post("/api/ops/dead-letters/dl-1/requeue")
    assert requeued.status == 200 and requeued.body["outcome"] == "requeued", requeued.body

    async def back_with_mark() -> bool:
        reply = await console.ops.get("/api/ops/dead-letters/dl-1")
        return reply.status == 200 and reply.body["headers"].get("x-ticketflow-requeued-by") == "op-ann"
    await wait_until(back_with_mark, 15, "the requeued message consumed and dead-lettered again")

    discarded = await console.ops.post("/api/ops/dead-letters/dl-1/discard")
    assert discarded.status == 200 and discarded.body["outcome"] == "discarded", discarded.body
    assert (await _dead_letters(console))["count"] == 0
    again = await console.ops.post("/api/ops/dead-letters/dl-1/discard")
    assert again.status == 404 and again.body["error"]["code"] == "DEAD_LETTER_NOT_FOUND"

    audit = [json.loads(line) for line in console["portal"].process.log_lines() if line.startswith("{")]
    events = [(a["event"], a.get("actor"), a.get("actor_role")) for a in audit
              if a.get("event", "").startswith("dead_letter_") and a.get("message_id") == "dl-1"]
    assert events == [("dead_letter_requeued", "op-ann", "operator"),
                      ("dead_letter_discarded", "op-ann", "operator")], events


async def _count(console, n: int) -> bool:
    return (await _dead_letters(console))["count"] == n


async def _stream(console, name: str, on_started=None) -> tuple[int, list[tuple[str, dict]]]:
    url = f"{console['portal'].api.base_url}/api/ops/drills/{name}/run"
    events: list[tuple[str, dict]] = []
    async with console.session.post(url, headers={"Authorization": f"Bearer {OPERATOR}"},
                                    timeout=aiohttp.ClientTimeout(total=60)) as response:
        if response.status != 200:
            return response.status, [("error", await response.json())]
        assert response.headers["Content-Type"].startswith("text/event-stream")
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.decode().splitlines())
                events.append((fields["event"], json.loads(fields["data"])))
                if fields["event"] == "started" and on_started is not None:
                    await on_started()
    return 200, events


async def test_a_drill_on_the_single_node_stack_streams_its_refusal_and_is_listed(console):
    busy: list = []

    async def second_one() -> None:  # while the first runs: one drill at a time
        reply = await console.ops.post("/api/ops/drills/pg-failover/run")
        busy.append((reply.status, reply.body))

    status, events = await _stream(console, "pg-switchover", on_started=second_one)
    assert status == 200, events
    assert busy and busy[0][0] == 409 and busy[0][1]["error"]["code"] == "DRILL_RUNNING", busy
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "started" and kinds[-1] == "done", kinds
    text = "\n".join(data["text"] for kind, data in events if kind == "line")
    assert "refused" in text and "HA" in text, text
    done = events[-1][1]
    assert done["exit_code"] == 2 and done["state"] == "finished", done

    drills = await console.ops.get("/api/ops/drills")
    assert drills.body["running"] is None and drills.body["recent"][0]["id"] == done["id"], drills.body
    shown = await console.ops.get(f"/api/ops/drills/{done['id']}")
    assert shown.status == 200 and "refused" in shown.body["output"] and shown.body["report"] is None, shown.body
    assert (console.drill_dir / f"{done['id']}.log").is_file()

    unknown = await console.ops.post("/api/ops/drills/kill/run")
    assert unknown.status == 404 and unknown.body["error"]["code"] == "DRILL_NOT_FOUND"

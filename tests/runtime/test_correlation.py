"""Correlation ids on every HTTP request (deploy/runtime/correlation.py): honoured, replaced, echoed, logged."""

import asyncio
import json
import re

import aiohttp
import structlog
from aiohttp import web

from deploy.runtime import correlation, logs
from deploy.runtime.http import make_app, start_http
from tests.support.stack import free_port

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


async def _seen(request: web.Request) -> web.Response:
    structlog.get_logger("t").info("handled_here")
    return web.json_response({"current": correlation.current()})


async def _serve():
    port = free_port()
    runner = await start_http(make_app([web.get("/seen", _seen)]), "127.0.0.1", port)
    return runner, f"http://127.0.0.1:{port}"


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return head


async def test_a_wellformed_request_id_is_honoured_echoed_and_in_every_log_line_of_the_request(capsys):
    logs.configure("test")
    runner, url = await _serve()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/seen", headers={"X-Request-Id": "req-0190c3c4.a:b_c"}) as response:
                assert response.headers["X-Request-Id"] == "req-0190c3c4.a:b_c"
                assert (await response.json())["current"] == "req-0190c3c4.a:b_c"
            async with session.get(url + "/nowhere", headers={"X-Request-Id": "req-404"}) as response:
                assert response.status == 404 and response.headers["X-Request-Id"] == "req-404"
    finally:
        await runner.cleanup()
        structlog.reset_defaults()  # its printer holds the captured stdout, which pytest closes
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    handled = [line for line in lines if line["event"] == "handled_here"]
    assert handled and handled[0]["correlation_id"] == "req-0190c3c4.a:b_c"
    assert correlation.current() is None


async def test_a_request_without_one_gets_a_fresh_id_and_keepalive_requests_never_share_it():
    runner, url = await _serve()
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:  # one connection
            seen = []
            for headers in ({"X-Request-Id": "first-request"}, {}, {}):
                async with session.get(url + "/seen", headers=headers) as response:
                    body = await response.json()
                    assert body["current"] == response.headers["X-Request-Id"]
                    seen.append(body["current"])
        assert seen[0] == "first-request"
        assert UUID.fullmatch(seen[1]) and UUID.fullmatch(seen[2]) and seen[1] != seen[2]
    finally:
        await runner.cleanup()


async def test_a_hostile_request_id_is_replaced_not_echoed():
    runner, url = await _serve()
    port = int(url.rsplit(":", 1)[1])
    try:
        async with aiohttp.ClientSession() as session:
            for hostile in ("x" * 129, "a b", "<script>", "../../etc", "-starts-with-dash", "ü-not-ascii", ""):
                async with session.get(url + "/seen", headers={"X-Request-Id": hostile}) as response:
                    echoed = response.headers["X-Request-Id"]
                    assert echoed != hostile and UUID.fullmatch(echoed), hostile
                    assert (await response.json())["current"] == echoed
        # Control characters need a raw request (clients refuse to send them): never echoed either.
        for control in (b"abc\x01def", b"abc\x1b[31mred", b"abc\x7f"):
            head = await _raw(port, b"GET /seen HTTP/1.1\r\nHost: x\r\nX-Request-Id: " + control +
                              b"\r\nConnection: close\r\n\r\n")
            assert control not in head
            status = int(head.split(b" ", 2)[1])
            if status == 200:  # accepted by the HTTP parser: the id was replaced
                echoed = re.search(rb"X-Request-Id: (\S+)", head, re.I).group(1).decode()
                assert UUID.fullmatch(echoed)
            else:  # refused by the HTTP parser as malformed
                assert status == 400
    finally:
        await runner.cleanup()


def test_accept_bounds_length_and_charset():
    assert correlation.accept("a" * 128) == "a" * 128
    assert correlation.accept("a" * 129) is None
    assert correlation.accept("0190c3c4-1111-7222-8333-444455556666") is not None
    assert correlation.accept("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") is not None  # traceparent
    for bad in (None, 7, "", " a", "a\nb", "a\x00", "a/b", "a\"b"):
        assert correlation.accept(bad) is None


def test_the_amqp_message_carries_the_id_as_its_correlation_id_property_and_a_cloudevents_attribute():
    from deploy.runtime.amqp import from_message, to_message
    from protocol.messages import Event

    traced = to_message(Event(3, "e-3", "payment.succeeded", "billing", "2027-01-01T00:00:00Z", {"order_id": "o"},
                              "pay-1"))
    assert traced.correlation_id == "pay-1" and from_message(traced.body)["correlationid"] == "pay-1"
    untraced = to_message(Event(4, "e-4", "payment.succeeded", "billing", "2027-01-01T00:00:00Z", {"order_id": "o"}))
    assert untraced.correlation_id is None and "correlationid" not in from_message(untraced.body)


def test_trace_reads_ha_replicas_logs_and_names_a_missing_one(tmp_path):
    from deploy.ops import trace

    def write(name: str, *lines: dict) -> None:
        (tmp_path / name).write_text("not json\n" + "".join(json.dumps(line) + "\n" for line in lines))

    write("reservation-1.log", {"service": "reservation", "event": "event_emitted", "ts": "2027-01-01T00:00:00.000Z",
                                "correlation_id": "h1", "order_id": "o1", "type": "reservation.created"},
          {"service": "reservation", "event": "event_emitted", "ts": "2027-01-01T00:00:00.001Z",
           "correlation_id": "h2", "order_id": "o2", "type": "reservation.created"})
    write("reservation-2.log", {"service": "reservation", "event": "event_emitted", "ts": "2027-01-01T00:00:00.300Z",
                                "correlation_id": "p1", "order_id": "o1", "type": "reservation.confirmed"})
    write("billing-2.log", {"service": "billing", "event": "events_applied", "ts": "2027-01-01T00:00:00.020Z",
                            "trace": [[1, "h1", "o1", "reservation.created", "order_opened"],
                                      [2, "h2", "o2", "reservation.created", "order_opened"]]},
          {"service": "billing", "event": "event_emitted", "ts": "2027-01-01T00:00:00.100Z",
           "correlation_id": "p1", "order_id": "o1", "type": "payment.succeeded"})
    write("bridge.log", {"service": "bridge", "event": "events_confirmed", "ts": "2027-01-01T00:00:00.150Z",
                         "trace": [[1, "p1", "o1", "payment.succeeded"]]})
    report = trace.find("o1", trace.log_files(tmp_path))
    assert report["correlation_ids"] == ["h1", "p1"]
    assert [(s["replica"], s["step"], s["since_start_ms"]) for s in report["steps"]] == [
        ("reservation-1", "event_emitted", 0.0), ("billing-2", "events_applied", 20.0),
        ("billing-2", "event_emitted", 100.0), ("bridge", "events_confirmed", 150.0),
        ("reservation-2", "event_emitted", 300.0)]
    assert report["missing_logs"] == ["portal"]
    assert "portal: no log file found" in trace.render(report)

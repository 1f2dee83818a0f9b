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

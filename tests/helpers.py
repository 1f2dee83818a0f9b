"""Test plumbing: deadline waits (never bare sleeps), an in-memory store, a chaos proxy."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence

from protocol.messages import Event


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"within {timeout}s: {what} never happened")
        await asyncio.sleep(0.01)


def make_events(n: int, start: int = 1) -> list[Event]:
    return [Event(seq, f"evt-{seq}", "test.event", "tests", "2026-11-24T00:00:00Z", {"n": seq}) for seq in range(start, start + n)]


class ListSource:
    """A producer's retained events, read the way a relay reads its outbox."""

    def __init__(self, events: Sequence[Event]) -> None:
        self.events = list(events)

    async def read(self, after: int, limit: int) -> list[Event]:
        return self.events[after : after + limit]

    async def head(self) -> int:
        return len(self.events)


class MemoryStore:
    """A receiver's store whose apply commits the batch and the position together, or not at all.

    ``fail_rate`` makes some commits fail (as a database error would) before
    anything is recorded. Every id applied twice is remembered, so a test can
    prove duplicates never became effects.
    """

    def __init__(self, fail_rate: float = 0.0, seed: int = 0) -> None:
        self.applied: list[int] = []
        self.ids: set[str] = set()
        self.duplicates: list[str] = []
        self.committed_position = 0
        self.failures = 0
        self.fail_rate = fail_rate
        self.rng = random.Random(seed)

    async def position(self) -> int:
        return self.committed_position

    async def apply(self, events: Sequence[Event]) -> None:
        await asyncio.sleep(0)  # a real commit yields to the loop
        if self.fail_rate and self.rng.random() < self.fail_rate:
            self.failures += 1
            raise RuntimeError("simulated commit failure")
        for event in events:
            if event.id in self.ids:
                self.duplicates.append(event.id)
                continue
            self.ids.add(event.id)
            self.applied.append(event.seq)
        self.committed_position = events[-1].seq


class ChaosProxy:
    """A TCP proxy that aborts each connection after a random number of bytes upstream.

    Cuts land anywhere: inside a frame, between frames, in the middle of a
    window, or in the handshake.
    """

    def __init__(self, upstream_port: int, max_bytes: int, seed: int = 1) -> None:
        self.upstream_port = upstream_port
        self.max_bytes = max_bytes
        self.rng = random.Random(seed)
        self.cuts = 0
        self.port = 0
        self.enabled = True
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        budget = self.rng.randint(1, self.max_bytes) if self.enabled else None

        async def pipe(reader, writer, limited: bool) -> None:
            nonlocal budget
            while True:
                data = await reader.read(4096)
                if not data:
                    break
                if limited and budget is not None:
                    if len(data) >= budget:
                        writer.write(data[:budget])
                        self.cuts += 1
                        raise ConnectionAbortedError("chaos cut")
                    budget -= len(data)
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(pipe(client_r, up_w, True)), asyncio.ensure_future(pipe(up_r, client_w, False))]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        client_w.transport.abort()
        up_w.transport.abort()


class TcpGate:
    """A TCP pass-through to a server that a test can shut (every connection cut, new ones refused) and reopen.

    Stands for "the broker went away" without stopping the one RabbitMQ the suite shares.
    """

    def __init__(self, upstream_port: int, port: int) -> None:
        self.upstream_port, self.port = upstream_port, port
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    async def shut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.transport.abort()
            return
        self._writers |= {client_w, up_w}

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(pipe(client_r, up_w)), asyncio.ensure_future(pipe(up_r, client_w))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for writer in (client_w, up_w):
                writer.transport.abort()
                self._writers.discard(writer)

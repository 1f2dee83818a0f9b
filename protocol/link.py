"""What the asyncio adapters share: link settings and the per-connection byte mover.

The adapters hold no protocol rule: a :class:`Connection` feeds the bytes it
reads to the session, calls the session's timer at its deadline, writes what
the session queued, and turns a terminal session event into an exception for
its owner (:mod:`protocol.sender`, :mod:`protocol.receiver`).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from protocol.aio import within
from protocol.errors import ProtocolError, RemoteError
from protocol.framing import DEFAULT_MAX_FRAME_SIZE
from protocol.session import (DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT,
                              DEFAULT_WINDOW, Failed, HeartbeatTimeout, PeerError, ReceiverSession,
                              SenderSession, SessionEvent)

READ_CHUNK = 1 << 16
# The stream reader's buffer bound (it stops reading the socket past twice this); the
# session's decoder bounds what an unauthenticated peer can make this side hold.
READ_LIMIT = 1 << 16
DEFAULT_MAX_PENDING = 64
DEFAULT_MAX_PENDING_PER_ADDRESS = 8


@dataclass(frozen=True)
class LinkSettings:
    """Tunables of one link end; defaults match PROTOCOL.md."""

    secret: bytes
    node: str
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    window: int = DEFAULT_WINDOW
    heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL  # sender: ping after this long without sending
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT  # either side: drop a peer silent this long
    connect_timeout: float = 5.0
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT  # a connection not through the handshake by then is closed
    ssl: ssl.SSLContext | None = None
    server_name: str | None = None  # sender with TLS: the name the certificate must carry (default: the host)
    max_pending: int = DEFAULT_MAX_PENDING  # receiver: connections not yet authenticated, in all
    max_pending_per_address: int = DEFAULT_MAX_PENDING_PER_ADDRESS  # ... and from one remote address


def server_tls(cert: str, key: str) -> ssl.SSLContext:
    """A receiver's TLS context: present ``cert`` (PEM chain) with its ``key``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def client_tls(ca: str) -> ssl.SSLContext:
    """A sender's TLS context: trust only certificates from ``ca`` (PEM) and check the host name."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class Connection:
    """A session bound to a stream pair: moves bytes, runs the session's timer, nothing else."""

    def __init__(self, session: SenderSession | ReceiverSession, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.reader = reader
        self.writer = writer
        self.clock = clock
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def flush(self) -> None:
        """Write whatever the session queued (hello, events, acks, pings, pongs, error frames)."""
        data = self.session.data_to_send()
        if data:
            self.writer.write(data)

    def act(self, events: list[SessionEvent]) -> list[SessionEvent]:
        """Write what the session queued; raise if ``events`` end the connection, else return them."""
        self.flush()
        for event in events:
            if isinstance(event, PeerError):
                raise RemoteError(event.code, event.message)
            if isinstance(event, (Failed, HeartbeatTimeout)):
                raise event.error
        return events

    async def read(self) -> list[SessionEvent]:
        """The next events: from the peer's bytes, or from the session's timer at its deadline.

        Raises :class:`RemoteError`, :class:`ProtocolError` (its error frame already
        written) or ``ConnectionResetError`` when the connection ends.
        """
        while True:
            deadline = self.session.next_deadline()
            delay = None if deadline is None else max(0.0, deadline - self.clock())
            try:
                async with asyncio.timeout(delay):
                    data = await self.reader.read(READ_CHUNK)
            except TimeoutError:
                events = self.session.handle_timer(self.clock())
            else:
                if not data:
                    raise ConnectionResetError("peer closed the connection")
                events = self.session.receive_data(data, self.clock())
            if self.act(events):  # pongs and pings go out at once, even while the owner is busy
                return events

    async def close(self, error: ProtocolError | None = None) -> None:
        """Send the error frame if the socket still allows it, then close."""
        try:
            if error is not None:
                self.session.fail(error.code, error.message)  # a no-op if the session already queued its own
            self.flush()
        except Exception:  # the socket may already be gone; the error frame is best effort
            pass
        self.writer.close()
        try:
            await within(1.0, self.writer.wait_closed())
        except Exception:
            pass


async def run_until_first_failure(*coros) -> None:
    """Run ``coros`` together; when one ends (or fails) cancel the rest and re-raise."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        # Bounded: a task that ignored its cancellation must not hold the connection's owner forever.
        _, stuck = await asyncio.wait(tasks, timeout=10)
        for task in stuck:
            structlog.get_logger("protocol").error("task_ignored_cancellation", task=repr(task))
    for task in done:
        if task.cancelled():
            continue
        exc = task.exception()
        if exc is not None:
            raise exc

"""What the asyncio adapters share: link settings and the per-connection plumbing."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import Counter
from dataclasses import dataclass

import structlog

from deploy.runtime.aio import within
from protocol.errors import ErrorCode, ProtocolError
from protocol.framing import DEFAULT_MAX_FRAME_SIZE
from protocol.session import DEFAULT_WINDOW, _Session

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
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 15.0
    connect_timeout: float = 5.0
    handshake_timeout: float = 5.0  # a connection that has not finished the handshake by then is closed
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


class PendingLimit:
    """Admission of connections that have not authenticated yet, in all and per remote address.

    Sans-IO: the receiver asks :meth:`admit` when a connection arrives and calls
    :meth:`release` once it has authenticated or closed. A refused connection is
    closed at once, so a flood costs a socket and a refusal, not a session.
    """

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self.pending: Counter[str] = Counter()
        self.refused = 0

    @property
    def count(self) -> int:
        return sum(self.pending.values())

    def admit(self, address: str) -> bool:
        if self.count >= self.total or self.pending[address] >= self.per_address:
            self.refused += 1
            return False
        self.pending[address] += 1
        return True

    def release(self, address: str) -> None:
        self.pending[address] -= 1
        if self.pending[address] <= 0:
            del self.pending[address]


class Connection:
    """A session bound to a stream pair, with the last time the peer was heard from."""

    def __init__(self, session: _Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.session = session
        self.reader = reader
        self.writer = writer
        self.last_heard = time.monotonic()
        self.last_written = time.monotonic()
        peer = writer.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)

    def flush(self) -> None:
        """Write whatever the session queued (events, acks, pongs, errors)."""
        data = self.session.data_to_send()
        if data:
            self.writer.write(data)
            self.last_written = time.monotonic()

    async def read(self) -> list[object]:
        data = await self.reader.read(READ_CHUNK)
        if not data:
            raise ConnectionResetError("peer closed the connection")
        self.last_heard = time.monotonic()
        events = self.session.receive_data(data)
        self.flush()  # pongs go out at once, even while the other side is busy
        return events

    async def watchdog(self, interval: float, timeout: float, ping: bool) -> None:
        """Ping while idle (if ``ping``) and drop a peer silent for ``timeout``."""
        nonce = 0
        while True:
            now = time.monotonic()
            silent = now - self.last_heard
            if silent >= timeout:
                raise ProtocolError(ErrorCode.HEARTBEAT_TIMEOUT, f"peer silent for {silent:.1f}s")
            if ping and now - self.last_written >= interval:
                nonce += 1
                self.session.ping(nonce)
                self.flush()
            next_ping = self.last_written + interval - now if ping else interval
            await asyncio.sleep(max(0.01, min(timeout - silent, next_ping)))

    async def close(self, error: ProtocolError | None = None) -> None:
        """Send the error frame if the socket still allows it, then close."""
        if error is not None:
            try:
                self.session.fail(error.code, error.message)
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

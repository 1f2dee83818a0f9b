"""The connecting end of a link: streams events from a source, resumes after breaks.

The sender holds nothing the source does not: on every connection the
receiver's welcome says where to resume and the sender reads from the source
again. Events are therefore kept by the producer (an outbox table) until they
are acknowledged, and a crash of either side costs only a resend.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from protocol.aio import wait_event, within
from protocol.backoff import Backoff
from protocol.errors import PERMANENT, BehindRetention, ErrorCode, ProtocolError, RemoteError
from protocol.link import READ_LIMIT, Connection, LinkSettings, run_until_first_failure
from protocol.messages import Event
from protocol.session import Acked, SenderSession, State, Welcomed

log = structlog.get_logger("protocol.sender")

ReadEvents = Callable[[int, int], Awaitable[Sequence[Event]]]
"""``read(after, limit)``: up to ``limit`` events with seq > ``after``, in order, gap-free."""


class Sender:
    def __init__(
        self,
        host: str,
        port: int,
        stream: str,
        read: ReadEvents,
        settings: LinkSettings,
        *,
        head: Callable[[], Awaitable[int]] | None = None,
        on_ack: Callable[[int], Awaitable[None]] | None = None,
        poll_interval: float = 1.0,
        backoff: Backoff | None = None,
        alternates: Sequence[tuple[str, int]] = (),
        clock: Callable[[], float] = time.monotonic,
        stable_after: float = 10.0,
    ) -> None:
        # Replicas of the receiver sharing one store (and so one position): after a
        # failed or broken connection the next attempt goes to the next of them.
        self.targets = [(host, port), *alternates]
        self._target = 0
        self.stream = stream
        self.settings = settings
        self._read = read
        self._head = head
        self._on_ack = on_ack
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff()
        # The backoff starts again from scratch only after real progress: an ack of new
        # events, or a connection that stayed up ``stable_after`` seconds. A handshake
        # alone is not progress (a receiver failing right after welcome must not be
        # hammered).
        self.clock = clock
        self.stable_after = stable_after
        self._progress = False
        self._up_since: float | None = None
        self.last_delay = 0.0  # the wait before the latest reconnection, for tests and status
        self.behind: BehindRetention | None = None  # the receiver is older than what is retained
        self._same_error = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._connection: Connection | None = None
        self.acked = 0  # highest seq the receiver confirmed (this process's view)
        self.connects = 0  # completed handshakes, for tests and status
        self.connected = False
        self.failures = 0  # consecutive failed connection attempts
        self.last_error: str | None = None  # code or exception name of the last broken connection

    @property
    def host(self) -> str:
        return self.targets[self._target][0]

    @property
    def port(self) -> int:
        return self.targets[self._target][1]

    @property
    def problem(self) -> dict[str, Any] | None:
        """What an operator must fix on this link, or None (read by /ready and ``ticketflow status``)."""
        if self.behind is None:
            return None
        return {"stream": self.stream, "error": self.behind.code.value, "receiver_position": self.behind.position,
                "oldest_retained": self.behind.oldest_retained, "missing": self.behind.missing,
                "advance_to": self.behind.oldest_retained - 1}

    @property
    def sent(self) -> int:
        """Highest seq sent on the current connection (``acked`` between connections); read by metrics."""
        conn = self._connection
        return conn.session.last_sent if conn is not None and self.connected else self.acked

    def notify(self) -> None:
        """New events may exist: stop waiting for the poll interval."""
        self._wake.set()

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._connection is not None:
            await self._connection.close(ProtocolError(ErrorCode.SHUTTING_DOWN, "sender stopping"))

    async def run(self) -> None:
        """Connect, stream and reconnect until :meth:`stop`."""
        while not self._stopping.is_set():
            self._progress, self._up_since = False, None
            permanent = False
            try:
                await self._run_connection()
            except asyncio.CancelledError:
                raise
            except BehindRetention as exc:
                self.behind, permanent = exc, True
                if self._first_or_rare(exc.code.value):
                    log.error("link_position_behind_retention", stream=self.stream, peer=f"{self.host}:{self.port}",
                              receiver_position=exc.position, oldest_retained=exc.oldest_retained,
                              missing=exc.missing, advance_to=exc.oldest_retained - 1)
            except RemoteError as exc:
                permanent = exc.code in PERMANENT
                if self._first_or_rare(exc.code):
                    (log.error if permanent else log.warning)(
                        "link_refused", stream=self.stream, peer=f"{self.host}:{self.port}", code=exc.code,
                        reason=exc.message, permanent=permanent)
            except ProtocolError as exc:
                permanent = exc.code.value in PERMANENT
                if self._first_or_rare(exc.code.value):
                    (log.error if permanent else log.warning)(
                        "link_protocol_error", stream=self.stream, peer=f"{self.host}:{self.port}",
                        code=exc.code.value, reason=exc.message, permanent=permanent)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                self.last_error = type(exc).__name__
                self.failures += 1
                # One line when the link goes down, then only at 10, 100, 1000... failures without progress.
                if math.log10(self.failures).is_integer():
                    log.info("link_down", stream=self.stream, peer=f"{self.host}:{self.port}",
                             reason=repr(exc), failed_attempts=self.failures)
            except Exception as exc:
                # The source (the producer's database) failed: transient, like a broken connection.
                if self._first_or_rare(type(exc).__name__):
                    log.warning("link_source_failed", stream=self.stream, reason=repr(exc))
            finally:
                self.connected = False
                self._connection = None
            if self._stopping.is_set():
                break
            if self._progress or (self._up_since is not None
                                  and self.clock() - self._up_since >= self.stable_after):
                self.backoff.reset()
                self.failures = 0
            self._target = (self._target + 1) % len(self.targets)
            # A permanent refusal needs an operator: retry at the slowest pace, not ever faster.
            delay = self.last_delay = self.backoff.cap if permanent else self.backoff.next_delay()
            await wait_event(self._stopping, delay)

    def _first_or_rare(self, code: str) -> bool:
        """Record ``code`` as the last error; True if worth a log line (new, or the 10th, 100th... in a row)."""
        self._same_error = self._same_error + 1 if code == self.last_error else 1
        self.last_error = code
        return math.log10(self._same_error).is_integer()

    async def _run_connection(self) -> None:
        s = self.settings
        tls = {"ssl": s.ssl, "server_hostname": s.server_name or self.host} if s.ssl is not None else {}
        reader, writer = await within(
            s.connect_timeout, asyncio.open_connection(self.host, self.port, limit=READ_LIMIT, **tls))
        session = SenderSession(self.stream, s.node, s.secret, s.window, s.max_frame_size, now=time.monotonic(),
                                heartbeat_interval=s.heartbeat_interval, heartbeat_timeout=s.heartbeat_timeout,
                                handshake_timeout=s.handshake_timeout)
        conn = self._connection = Connection(session, reader, writer)
        error: ProtocolError | None = None
        try:
            conn.flush()
            welcome = await self._handshake(conn)  # the session times it out (HEARTBEAT_TIMEOUT)
            self._up_since = self.clock()
            if self._head is not None:
                head = await self._head()
                first = await self._read(welcome.position, 1)
                conn.act(session.check_resume(head, first[0].seq if first else None))
            self.behind = None
            self.connects += 1
            self.connected = True
            self.acked = max(self.acked, welcome.position)
            log.info("link_up", stream=self.stream, peer=conn.peer, position=welcome.position, receiver=welcome.node)
            await run_until_first_failure(self._read_acks(conn), self._send_events(conn))
        except ProtocolError as exc:
            error = exc
            raise
        finally:
            await conn.close(error)

    async def _handshake(self, conn: Connection) -> Welcomed:
        while True:
            for event in await conn.read():
                if isinstance(event, Welcomed):
                    return event

    async def _read_acks(self, conn: Connection) -> None:
        while True:
            acked = None
            for event in await conn.read():
                if isinstance(event, Acked):
                    acked = event.seq
            if acked is not None:
                self.acked = acked
                self._progress = True  # new events applied: the next break backs off from scratch
                self._wake.set()
                if self._on_ack is not None:
                    await self._on_ack(acked)

    async def _send_events(self, conn: Connection) -> None:
        session = conn.session
        assert isinstance(session, SenderSession)
        while session.state is State.STREAMING:
            # Clear before looking at the window and the source: a wake-up (ack or notify)
            # from here on makes the wait below return. Clearing only when the window had
            # room would leave a notify set while it is full, and Event.wait() returns
            # without yielding when set: the loop would spin and starve the ack reader.
            self._wake.clear()
            room = session.window_open
            events: Sequence[Event] = ()
            if room > 0:
                events = await self._read(session.last_sent, room)
            if conn.writer.is_closing():
                # 3.11's drain() on a closing transport returns instead of raising.
                raise ConnectionResetError("connection closed while sending")
            if events:
                # The session refuses what can never be sent (a source that skips pruned events,
                # an event too large for a frame) with its error frame; act raises it.
                conn.act(session.send_events(events, time.monotonic()))
                await conn.writer.drain()
                continue
            # Window full or nothing new: sleep until an ack, a notify, or the poll fallback.
            await wait_event(self._wake, self.poll_interval)

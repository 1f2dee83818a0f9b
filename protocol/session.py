"""Connection state machines for both ends of a link, sans-IO (in the manner of h11 and aioquic).

A session owns every rule of PROTOCOL.md: the handshake and its deadline,
heartbeats, which frame is allowed when, sequence and ack checks, the window,
resume and retention checks, frame-size limits. It never touches a socket, a
clock or asyncio: time is passed in, so every rule is testable with a fake
clock, byte by byte. The asyncio adapters (:mod:`protocol.sender`,
:mod:`protocol.receiver`) only move bytes, call :meth:`handle_timer` when
:meth:`next_deadline` is reached, and act on the events that come out.

Typical use::

    session = SenderSession("reservations", "r1", secret, now=clock())
    transport.write(session.data_to_send())                       # hello
    for event in session.receive_data(transport.read(), clock()):  # Welcomed, Acked, PeerError, ...
        ...
    transport.write(session.data_to_send())                       # auth, pongs, error frames
    # ... and whenever clock() reaches session.next_deadline():
    session.handle_timer(clock())                                 # ping, or HeartbeatTimeout

Every event is one of :data:`SessionEvent`. :data:`TERMINAL` events end the
connection: the session is closed and, unless the peer ended it, the error
frame it owes the peer is already queued in :meth:`data_to_send`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from protocol import messages as m
from protocol.errors import BehindRetention, ErrorCode, ProtocolError
from protocol.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame

DEFAULT_WINDOW = 256
DEFAULT_HEARTBEAT_INTERVAL = 5.0
DEFAULT_HEARTBEAT_TIMEOUT = 15.0
DEFAULT_HANDSHAKE_TIMEOUT = 5.0
# Until the peer has proven the secret no frame may be larger than this (PROTOCOL.md section 2):
# an unauthenticated peer cannot make either side buffer a megabyte.
HANDSHAKE_MAX_FRAME_SIZE = 4096
MIN_SECRET_SIZE = 16

SENDER_LABEL = b"ticketflow-link/2 sender\x00"
RECEIVER_LABEL = b"ticketflow-link/2 receiver\x00"


def auth_proof(secret: bytes, nonce: bytes, stream: str) -> bytes:
    """Version 1 (PROTOCOL.md section 4): HMAC-SHA256(secret, nonce || UTF-8(stream))."""
    return hmac.new(secret, nonce + stream.encode(), hashlib.sha256).digest()


def sender_proof(secret: bytes, sender_nonce: bytes, receiver_nonce: bytes, stream: str) -> bytes:
    """Version 2: what the sender answers in ``auth`` (PROTOCOL.md section 4)."""
    return hmac.new(secret, SENDER_LABEL + sender_nonce + receiver_nonce + stream.encode(), hashlib.sha256).digest()


def receiver_proof(secret: bytes, sender_nonce: bytes, receiver_nonce: bytes, stream: str) -> bytes:
    """Version 2: what the receiver sends in ``challenge``. Its own label: it can never pass as a sender's."""
    return hmac.new(secret, RECEIVER_LABEL + sender_nonce + receiver_nonce + stream.encode(), hashlib.sha256).digest()


def check_secret(secret: bytes) -> bytes:
    """The shared secret is a byte string of at least 16 bytes (PROTOCOL.md section 4), never text."""
    if not isinstance(secret, bytes):
        raise TypeError(f"the link secret must be bytes (e.g. the UTF-8 of the configured text), "
                        f"not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_SIZE:
        raise ValueError(f"the link secret must be at least {MIN_SECRET_SIZE} bytes")
    return secret


# --- the events a session reports to its adapter --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Receiver: the sender proved the secret. Read the durable position, then call ``welcome``."""

    stream: str
    node: str


@dataclass(frozen=True, slots=True)
class Welcomed:
    """Sender: handshake done; resume after ``position`` (after ``check_resume``)."""

    position: int
    node: str


@dataclass(frozen=True, slots=True)
class EventsReceived:
    """Receiver: these events arrived in order; they wait in the session for ``next_batch``."""

    events: tuple[m.Event, ...]


@dataclass(frozen=True, slots=True)
class Acked:
    """Sender: the receiver durably applied everything up to ``seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class PeerError:
    """Terminal: the peer sent ``error{code}`` and closes."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Terminal: this side found the connection unusable; ``error{error.code}`` is queued for the peer."""

    error: ProtocolError

    @property
    def code(self) -> ErrorCode:
        return self.error.code


@dataclass(frozen=True, slots=True)
class HeartbeatTimeout:
    """Terminal: the peer was silent too long, or did not finish the handshake in time.

    ``error{HEARTBEAT_TIMEOUT}`` is queued for the peer.
    """

    silent_for: float
    handshake: bool

    @property
    def error(self) -> ProtocolError:
        what = "handshake not completed" if self.handshake else "peer silent"
        return ProtocolError(ErrorCode.HEARTBEAT_TIMEOUT, f"{what} for {self.silent_for:.1f}s")


SessionEvent = Authenticated | Welcomed | EventsReceived | Acked | PeerError | Failed | HeartbeatTimeout
TERMINAL = (PeerError, Failed, HeartbeatTimeout)


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_AUTH = "await_auth"
    AWAIT_WELCOME = "await_welcome"
    AUTHENTICATED = "authenticated"
    STREAMING = "streaming"
    CLOSED = "closed"


HANDSHAKE_STATES = frozenset({State.AWAIT_HELLO, State.AWAIT_CHALLENGE, State.AWAIT_AUTH, State.AWAIT_WELCOME})


class _Session:
    pings = False  # whether this side pings when idle (PROTOCOL.md section 8: the sender does)

    def __init__(self, secret: bytes, max_frame_size: int, now: float, heartbeat_interval: float,
                 heartbeat_timeout: float, handshake_timeout: float) -> None:
        if heartbeat_timeout <= 0 or heartbeat_interval <= 0 or handshake_timeout <= 0:
            raise ValueError("heartbeat interval, heartbeat timeout and handshake timeout must be positive")
        self._secret = check_secret(secret)
        self.max_frame_size = max_frame_size
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.handshake_timeout = handshake_timeout
        self.state: State
        self._decoder = FrameDecoder(min(max_frame_size, HANDSHAKE_MAX_FRAME_SIZE))
        self._outgoing = bytearray()
        self._started = self._now = self._last_heard = self._last_sent = now
        self._ping_nonce = 0

    # --- what the adapter calls -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def receive_data(self, data: bytes, now: float) -> list[SessionEvent]:
        """Feed bytes received at ``now``; return what they mean, in order.

        Consecutive events are reported as one :class:`EventsReceived`. A
        terminal event is always the last of the list; after it the session
        ignores further input.
        """
        if self.closed:
            return []
        self._tick(now)
        self._last_heard = now
        out: list[SessionEvent] = []
        arrived: list[m.Event] = []

        def report_arrived() -> None:
            if arrived:
                out.append(EventsReceived(tuple(arrived)))
                arrived.clear()

        try:
            for body in self._decoder.feed(data):
                message = m.from_wire(body)
                if isinstance(message, m.Error):
                    report_arrived()
                    self.state = State.CLOSED
                    out.append(PeerError(message.code, message.message))
                    return out
                result = self._dispatch(message)
                if isinstance(result, m.Event):
                    arrived.append(result)
                    continue
                report_arrived()
                if result is not None:
                    out.append(result)
        except ProtocolError as exc:
            report_arrived()
            out.append(self._failed(exc))
            return out
        report_arrived()
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must be called next (None once closed)."""
        if self.closed:
            return None
        if self.state in HANDSHAKE_STATES:
            return self._started + self.handshake_timeout
        deadline = self._last_heard + self.heartbeat_timeout
        if self.pings and self.state is State.STREAMING:
            deadline = min(deadline, self._last_sent + self.heartbeat_interval)
        return deadline

    def handle_timer(self, now: float) -> list[SessionEvent]:
        """Run the timers at ``now``: ping when idle, time out a silent peer or a slow handshake.

        Calling it early is harmless.
        """
        if self.closed:
            return []
        self._tick(now)
        if self.state in HANDSHAKE_STATES:
            if now >= self._started + self.handshake_timeout:
                return [self._timed_out(now - self._started, handshake=True)]
            return []
        silent = now - self._last_heard
        if silent >= self.heartbeat_timeout:
            return [self._timed_out(silent, handshake=False)]
        if self.pings and self.state is State.STREAMING and now - self._last_sent >= self.heartbeat_interval:
            self._ping_nonce = self._ping_nonce + 1 if self._ping_nonce < m.MAX_NONCE else 1
            self._queue(m.Ping(self._ping_nonce))
        return []

    def fail(self, code: ErrorCode, message: str) -> None:
        """End the connection from this side: queue ``error{code}`` (PROTOCOL.md section 7), the last frame."""
        if not self.closed:
            self._queue(m.Error(code.value, message))
            self.state = State.CLOSED

    # --- shared machinery -------------------------------------------------------------------------

    def _tick(self, now: float | None) -> None:
        if now is not None:
            self._now = now

    def _queue(self, message: m.Message) -> None:
        self._outgoing += encode_frame(m.to_wire(message), self.max_frame_size)
        self._last_sent = self._now

    def _failed(self, error: ProtocolError) -> Failed:
        self.fail(error.code, error.message)
        return Failed(error)

    def _timed_out(self, silent: float, handshake: bool) -> HeartbeatTimeout:
        event = HeartbeatTimeout(silent, handshake)
        self.fail(ErrorCode.HEARTBEAT_TIMEOUT, event.error.message)
        return event

    def _require(self, state: State, action: str) -> None:
        if self.state is not state:
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"cannot {action} in state {self.state.value}")

    def _dispatch(self, message: m.Message) -> SessionEvent | m.Event | None:
        # Heartbeats belong to an established link only: before the welcome an unauthenticated
        # peer gets no answer to anything but the handshake (PROTOCOL.md section 4).
        if isinstance(message, m.Ping) and self.state is State.STREAMING:
            self._queue(m.Pong(message.nonce))
            return None
        if isinstance(message, m.Pong) and self.state is State.STREAMING:
            return None  # receiving it was the point: the peer is alive
        return self._handle(message)

    def _peer_proven(self) -> None:
        """The peer knows the secret: full-size frames from now on."""
        self._decoder.max_frame_size = self.max_frame_size

    def _handle(self, message: m.Message) -> SessionEvent | m.Event | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _unexpected(self, message: m.Message) -> ProtocolError:
        return ProtocolError(
            ErrorCode.UNEXPECTED_FRAME, f"{type(message).__name__.lower()} is not allowed in state {self.state.value}"
        )


class SenderSession(_Session):
    """The connecting side: says hello, proves the secret, streams events within a window, pings when idle."""

    pings = True

    def __init__(
        self,
        stream: str,
        node: str,
        secret: bytes,
        window: int = DEFAULT_WINDOW,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        version: int = m.PROTOCOL_VERSION,
        nonce_source: Callable[[int], bytes] = os.urandom,
        *,
        now: float,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
    ) -> None:
        super().__init__(secret, max_frame_size, now, heartbeat_interval, heartbeat_timeout, handshake_timeout)
        if window < 1:
            raise ValueError("window must be at least 1")
        if heartbeat_interval >= heartbeat_timeout:
            # The peer's pongs answer our pings: pinging less often than we time out would drop live peers.
            raise ValueError("heartbeat_interval must be shorter than heartbeat_timeout")
        self.stream = stream
        self.node = node
        self.window = window
        self.version = version
        self.acked = 0  # highest seq the receiver durably applied
        self.last_sent = 0
        self.state = State.AWAIT_CHALLENGE
        self._nonce = nonce_source(m.NONCE_SIZE) if version >= 2 else None
        self._queue(m.Hello(version, stream, node, self._nonce))

    @property
    def in_flight(self) -> int:
        return self.last_sent - self.acked

    @property
    def window_open(self) -> int:
        """How many more events may be sent before an ack is needed."""
        if self.state is not State.STREAMING:
            return 0
        return self.window - self.in_flight

    def check_resume(self, head: int, first_retained: int | None) -> list[SessionEvent]:
        """After the welcome: can the stream resume where the receiver is (PROTOCOL.md section 6)?

        ``head`` is the newest seq the sender ever wrote, ``first_retained`` the seq
        of the first event it still holds after the welcome position (None if none).
        Returns ``[Failed(POSITION_AHEAD | POSITION_BEHIND_RETENTION)]`` or ``[]``.
        """
        self._require(State.STREAMING, "check the resume position")
        position = self.acked
        if position > head:
            return [self._failed(ProtocolError(
                ErrorCode.POSITION_AHEAD, f"receiver is at {position} but this stream only reaches {head}"))]
        if position < head and (first_retained is None or first_retained > position + 1):
            return [self._failed(BehindRetention(position, head + 1 if first_retained is None else first_retained))]
        return []

    def send_event(self, event: m.Event, now: float | None = None) -> list[SessionEvent]:
        """Queue the next event. ``[]``, or a terminal ``Failed`` when it can never be sent:

        - its seq skips ahead of the next one: the events in between were pruned
          (POSITION_BEHIND_RETENTION; a sender never skips, section 6);
        - its frame exceeds the maximum frame size (FRAME_TOO_LARGE, permanent: section 5).

        Sending out of order or into a full window is the caller's bug (ValueError).
        """
        self._require(State.STREAMING, "send events")
        self._tick(now)
        if event.seq <= self.last_sent:
            raise ValueError(f"event seq {event.seq} is not the next one ({self.last_sent + 1})")
        if self.in_flight >= self.window:
            raise ValueError("window is full: wait for an ack")
        if event.seq > self.last_sent + 1:
            # The source skips ahead: the events the receiver needs next were pruned.
            return [self._failed(BehindRetention(self.last_sent, event.seq))]
        try:
            self._queue(event)
        except ProtocolError as exc:
            return [self._failed(ProtocolError(
                ErrorCode.FRAME_TOO_LARGE, f"event {event.seq} (id {event.id}) cannot be sent: {exc.message}; "
                "the stream stops here until an operator shrinks or removes it at the source"))]
        self.last_sent = event.seq
        return []

    def send_events(self, events: Iterable[m.Event], now: float | None = None) -> list[SessionEvent]:
        """:meth:`send_event` for each, stopping at the first terminal event."""
        for event in events:
            if failed := self.send_event(event, now):
                return failed
        return []

    def _handle(self, message: m.Message) -> SessionEvent | None:
        if isinstance(message, m.Challenge) and self.state is State.AWAIT_CHALLENGE:
            if self._nonce is None:
                self._queue(m.Auth(auth_proof(self._secret, message.nonce, self.stream)))
            else:
                # Mutual: the receiver proves the secret before this side says anything more.
                expected = receiver_proof(self._secret, self._nonce, message.nonce, self.stream)
                if message.proof is None or not hmac.compare_digest(expected, message.proof):
                    raise ProtocolError(ErrorCode.AUTH_FAILED, "the receiver could not prove the shared secret")
                self._queue(m.Auth(sender_proof(self._secret, self._nonce, message.nonce, self.stream)))
            self.state = State.AWAIT_WELCOME
            return None
        if isinstance(message, m.Welcome) and self.state is State.AWAIT_WELCOME:
            self.state = State.STREAMING
            self.acked = self.last_sent = message.position
            self._peer_proven()
            return Welcomed(message.position, message.node)
        if isinstance(message, m.Ack) and self.state is State.STREAMING:
            if message.seq > self.last_sent:
                raise ProtocolError(
                    ErrorCode.UNEXPECTED_FRAME, f"ack {message.seq} is beyond the last sent event {self.last_sent}"
                )
            if message.seq < self.acked:
                raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"ack {message.seq} goes back from {self.acked}")
            if message.seq == self.acked:
                return None  # a repeated ack changes nothing
            self.acked = message.seq
            return Acked(message.seq)
        raise self._unexpected(message)


class ReceiverSession(_Session):
    """The accepting side: checks version, stream and proof, takes events in order, acks applied batches."""

    def __init__(
        self,
        streams: Collection[str],
        secret: bytes,
        node: str,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        nonce_source: Callable[[int], bytes] = os.urandom,
        versions: Collection[int] = m.SUPPORTED_VERSIONS,
        *,
        now: float,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,  # unused: a receiver only answers pings
    ) -> None:
        super().__init__(secret, max_frame_size, now, heartbeat_interval, heartbeat_timeout, handshake_timeout)
        self.streams = streams
        self.node = node
        self.versions = versions
        self._nonce_source = nonce_source
        self._nonce = b""
        self._peer_nonce: bytes | None = None
        self.version: int | None = None
        self.stream: str | None = None
        self.peer_node: str | None = None
        self.last_received = 0
        self.acked = 0
        self._unapplied: deque[m.Event] = deque()
        self._applying: int | None = None  # last seq of the batch handed out by next_batch
        self.state = State.AWAIT_HELLO

    def welcome(self, position: int, now: float | None = None) -> None:
        """Answer the authenticated peer with the stream's durable ``position``."""
        self._require(State.AUTHENTICATED, "welcome")
        self._tick(now)
        self._queue(m.Welcome(position, self.node))
        self.last_received = self.acked = position
        self.state = State.STREAMING

    def next_batch(self, limit: int) -> tuple[m.Event, ...]:
        """The next batch to apply: the events that have arrived and are not applied, at most ``limit``.

        Never waits for more to arrive (PROTOCOL.md section 6: a receiver that held its ack
        for a fuller batch would wait forever on a sender whose window is full). Apply the
        batch and its position in one commit, then call :meth:`batch_applied`.
        """
        if self._applying is not None:
            raise RuntimeError("the previous batch has not been applied yet")
        if self.state is not State.STREAMING or not self._unapplied:
            return ()
        batch = tuple(self._unapplied.popleft() for _ in range(min(limit, len(self._unapplied))))
        self._applying = batch[-1].seq
        return batch

    def batch_applied(self, now: float | None = None) -> None:
        """The batch from :meth:`next_batch` is durably committed: acknowledge it at once."""
        if self._applying is None:
            raise RuntimeError("no batch is being applied")
        seq, self._applying = self._applying, None
        self.ack(seq, now)

    def ack(self, seq: int, now: float | None = None) -> None:
        """Acknowledge that everything up to ``seq`` is durably applied."""
        self._require(State.STREAMING, "ack")
        self._tick(now)
        if not self.acked < seq <= self.last_received:
            raise ValueError(f"ack {seq} must be in ({self.acked}, {self.last_received}]")
        self._queue(m.Ack(seq))
        self.acked = seq
        while self._unapplied and self._unapplied[0].seq <= seq:
            self._unapplied.popleft()

    def _handle(self, message: m.Message) -> SessionEvent | m.Event | None:
        if isinstance(message, m.Event) and self.state is State.STREAMING:
            if message.seq != self.last_received + 1:
                raise ProtocolError(
                    ErrorCode.SEQUENCE_GAP, f"expected seq {self.last_received + 1}, got {message.seq}"
                )
            self.last_received = message.seq
            self._unapplied.append(message)
            return message
        if isinstance(message, m.Hello) and self.state is State.AWAIT_HELLO:
            if message.version not in self.versions:
                raise ProtocolError(
                    ErrorCode.UNSUPPORTED_VERSION,
                    f"version {message.version} is not supported (supported: {sorted(self.versions)})",
                )
            if message.stream not in self.streams:
                raise ProtocolError(ErrorCode.UNKNOWN_STREAM, f"stream {message.stream!r} is not served here")
            if message.version >= 2 and message.nonce is None:
                raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"hello of version {message.version} needs a nonce")
            self.version, self.stream, self.peer_node = message.version, message.stream, message.node
            self._nonce = self._nonce_source(m.NONCE_SIZE)
            self._peer_nonce = message.nonce
            proof = None
            if message.nonce is not None:
                proof = receiver_proof(self._secret, message.nonce, self._nonce, message.stream)
            self._queue(m.Challenge(self._nonce, proof))
            self.state = State.AWAIT_AUTH
            return None
        if isinstance(message, m.Auth) and self.state is State.AWAIT_AUTH:
            assert self.stream is not None and self.peer_node is not None
            if self._peer_nonce is None:
                expected = auth_proof(self._secret, self._nonce, self.stream)
            else:
                expected = sender_proof(self._secret, self._peer_nonce, self._nonce, self.stream)
            if not hmac.compare_digest(expected, message.proof):
                raise ProtocolError(ErrorCode.AUTH_FAILED, "proof does not match the shared secret")
            self.state = State.AUTHENTICATED
            self._peer_proven()
            return Authenticated(self.stream, self.peer_node)
        raise self._unexpected(message)


class PendingLimit:
    """A receiver's admission of connections that have not authenticated yet, in all and per address.

    PROTOCOL.md section 4: the receiver asks :meth:`admit` when a connection arrives
    and calls :meth:`release` once it has authenticated or closed. A refused
    connection is closed at once, so a flood costs a socket and a refusal, not a session.
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

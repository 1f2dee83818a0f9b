"""Connection state machines for both ends of a link, sans-IO (h11 style).

A session turns received bytes into typed events and queues the bytes it
wants to send; it never touches a socket, a clock or asyncio, so every rule of
PROTOCOL.md is testable byte by byte. The I/O adapters in
:mod:`protocol.sender` and :mod:`protocol.receiver` move the bytes.

Typical use::

    session = SenderSession(stream="reservations", node="r1", secret=b"...")
    transport.write(session.data_to_send())          # hello
    for ev in session.receive_data(transport.read()):  # challenge → auth queued
        ...
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass

from protocol import messages as m
from protocol.errors import BehindRetention, ErrorCode, ProtocolError, RemoteError
from protocol.framing import DEFAULT_MAX_FRAME_SIZE, FrameDecoder, encode_frame

DEFAULT_WINDOW = 256
# Until the peer has proven the secret no frame may be larger than this (PROTOCOL.md section 2):
# an unauthenticated peer cannot make either side buffer a megabyte.
HANDSHAKE_MAX_FRAME_SIZE = 4096

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


# --- events a session reports to its adapter ---------------------------------


@dataclass(frozen=True, slots=True)
class Welcomed:
    """Handshake done (sender side): resume after ``position``."""

    position: int
    node: str


@dataclass(frozen=True, slots=True)
class Acked:
    """The receiver durably applied everything up to ``seq``."""

    seq: int


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Handshake proven (receiver side): the adapter must now call ``welcome``."""

    stream: str
    node: str


@dataclass(frozen=True, slots=True)
class PongReceived:
    nonce: int


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    AWAIT_CHALLENGE = "await_challenge"
    AWAIT_AUTH = "await_auth"
    AWAIT_WELCOME = "await_welcome"
    AUTHENTICATED = "authenticated"
    STREAMING = "streaming"
    CLOSED = "closed"


class _Session:
    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self.state: State
        self._decoder = FrameDecoder(min(max_frame_size, HANDSHAKE_MAX_FRAME_SIZE))
        self._outgoing = bytearray()

    def data_to_send(self) -> bytes:
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def _queue(self, message: m.Message) -> None:
        self._outgoing += encode_frame(m.to_wire(message), self.max_frame_size)

    def fail(self, code: ErrorCode, message: str) -> None:
        """Queue the error frame that ends the connection (PROTOCOL.md section 7)."""
        if self.state is not State.CLOSED:
            self._queue(m.Error(code.value, message))
            self.state = State.CLOSED

    def ping(self, nonce: int) -> None:
        self._require_open()
        self._queue(m.Ping(nonce))

    def _require_open(self) -> None:
        if self.state is State.CLOSED:
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, "session is closed")

    def receive_data(self, data: bytes) -> list[object]:
        """Feed received bytes; return what they mean, in order.

        Raises :class:`ProtocolError` when the peer broke the protocol (the
        caller should :meth:`fail` with its code and close) and
        :class:`RemoteError` when the peer sent an error frame.
        """
        self._require_open()
        events: list[object] = []
        for body in self._decoder.feed(data):
            message = m.from_wire(body)
            if isinstance(message, m.Error):
                self.state = State.CLOSED
                raise RemoteError(message.code, message.message)
            if isinstance(message, m.Ping):
                self._queue(m.Pong(message.nonce))
                continue
            if isinstance(message, m.Pong):
                events.append(PongReceived(message.nonce))
                continue
            event = self._handle(message)
            if event is not None:
                events.append(event)
        return events

    def _peer_proven(self) -> None:
        """The peer knows the secret: full-size frames from now on."""
        self._decoder.max_frame_size = self.max_frame_size

    def _handle(self, message: m.Message) -> object | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _unexpected(self, message: m.Message) -> ProtocolError:
        return ProtocolError(
            ErrorCode.UNEXPECTED_FRAME, f"{type(message).__name__.lower()} is not allowed in state {self.state.value}"
        )


class SenderSession(_Session):
    """The connecting side: says hello, proves the secret, streams events within a window."""

    def __init__(
        self,
        stream: str,
        node: str,
        secret: bytes,
        window: int = DEFAULT_WINDOW,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        version: int = m.PROTOCOL_VERSION,
        nonce_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        super().__init__(max_frame_size)
        if window < 1:
            raise ValueError("window must be at least 1")
        self.stream = stream
        self.node = node
        self.window = window
        self.version = version
        self._secret = secret
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

    def send_event(self, event: m.Event) -> None:
        if self.state is not State.STREAMING:
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"cannot send events in state {self.state.value}")
        if event.seq != self.last_sent + 1:
            raise ValueError(f"event seq {event.seq} is not the next one ({self.last_sent + 1})")
        if self.in_flight >= self.window:
            raise ValueError("window is full: wait for an ack")
        self._queue(event)
        self.last_sent = event.seq

    def check_resume(self, head: int, first_retained: int | None) -> None:
        """After the welcome: can the stream resume where the receiver is (PROTOCOL.md section 6)?

        ``head`` is the newest seq the sender ever wrote, ``first_retained`` the seq
        of the first event it still holds after the welcome position (None if none).
        """
        position = self.acked
        if position > head:
            raise ProtocolError(
                ErrorCode.POSITION_AHEAD, f"receiver is at {position} but this stream only reaches {head}")
        if position < head and (first_retained is None or first_retained > position + 1):
            raise BehindRetention(position, head + 1 if first_retained is None else first_retained)

    def _handle(self, message: m.Message) -> object | None:
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
                raise ProtocolError(
                    ErrorCode.UNEXPECTED_FRAME, f"ack {message.seq} goes back from {self.acked}"
                )
            if message.seq == self.acked:
                return None
            self.acked = message.seq
            return Acked(message.seq)
        raise self._unexpected(message)


class ReceiverSession(_Session):
    """The accepting side: checks version, stream and proof, then takes events in order."""

    def __init__(
        self,
        streams: Collection[str],
        secret: bytes,
        node: str,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        nonce_source: Callable[[int], bytes] = os.urandom,
        versions: Collection[int] = m.SUPPORTED_VERSIONS,
    ) -> None:
        super().__init__(max_frame_size)
        self.streams = streams
        self.node = node
        self.versions = versions
        self._secret = secret
        self._nonce_source = nonce_source
        self._nonce = b""
        self._peer_nonce: bytes | None = None
        self.version: int | None = None
        self.stream: str | None = None
        self.peer_node: str | None = None
        self.last_received = 0
        self.acked = 0
        self.state = State.AWAIT_HELLO

    def welcome(self, position: int) -> None:
        """Answer the authenticated peer with the stream's durable ``position``."""
        if self.state is not State.AUTHENTICATED:
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"cannot welcome in state {self.state.value}")
        self._queue(m.Welcome(position, self.node))
        self.last_received = self.acked = position
        self.state = State.STREAMING

    def ack(self, seq: int) -> None:
        """Acknowledge that everything up to ``seq`` is durably applied."""
        if self.state is not State.STREAMING:
            raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"cannot ack in state {self.state.value}")
        if not self.acked < seq <= self.last_received:
            raise ValueError(f"ack {seq} must be in ({self.acked}, {self.last_received}]")
        self._queue(m.Ack(seq))
        self.acked = seq

    def _handle(self, message: m.Message) -> object | None:
        if isinstance(message, m.Event) and self.state is State.STREAMING:
            if message.seq != self.last_received + 1:
                raise ProtocolError(
                    ErrorCode.SEQUENCE_GAP, f"expected seq {self.last_received + 1}, got {message.seq}"
                )
            self.last_received = message.seq
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

"""Typed messages of the link protocol (PROTOCOL.md section 3) and their validation."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from protocol.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 2  # what a sender speaks; a receiver also accepts 1 (PROTOCOL.md section 9)
SUPPORTED_VERSIONS = (1, 2)
NONCE_SIZE = 32
PROOF_SIZE = 32
MAX_SEQ = (1 << 64) - 1
MAX_NONCE = (1 << 64) - 1  # a ping nonce is an unsigned 64-bit integer
MAX_CORRELATION_ID = 128  # characters of event.correlationid (PROTOCOL.md section 5)
_CORRELATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


@dataclass(frozen=True, slots=True)
class Event:
    """One event of a stream: its sequence number and CloudEvents-named envelope."""

    seq: int
    id: str
    type: str
    source: str
    time: str
    data: Any = None
    # Optional (PROTOCOL.md section 5): the id of the request that caused the event, for tracing.
    correlation_id: str | None = None

    def envelope(self) -> dict[str, Any]:
        envelope = {"id": self.id, "type": self.type, "source": self.source, "time": self.time, "data": self.data}
        if self.correlation_id is not None:
            envelope["correlationid"] = self.correlation_id
        return envelope


@dataclass(frozen=True, slots=True)
class Hello:
    version: int
    stream: str
    node: str
    nonce: bytes | None = None  # version 2: the sender's challenge to the receiver


@dataclass(frozen=True, slots=True)
class Challenge:
    nonce: bytes
    proof: bytes | None = None  # version 2: the receiver's proof of the secret


@dataclass(frozen=True, slots=True)
class Auth:
    proof: bytes


@dataclass(frozen=True, slots=True)
class Welcome:
    position: int
    node: str


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int


@dataclass(frozen=True, slots=True)
class Ping:
    nonce: int


@dataclass(frozen=True, slots=True)
class Pong:
    nonce: int


@dataclass(frozen=True, slots=True)
class Error:
    code: str
    message: str


Message = Hello | Challenge | Auth | Welcome | Event | Ack | Ping | Pong | Error


def to_wire(message: Message) -> dict[str, Any]:
    match message:
        case Hello(version, stream, node, nonce):
            wire = {"type": "hello", "version": version, "stream": stream, "node": node}
            if nonce is not None:
                wire["nonce"] = nonce
            return wire
        case Challenge(nonce, proof):
            wire = {"type": "challenge", "nonce": nonce}
            if proof is not None:
                wire["proof"] = proof
            return wire
        case Auth(proof):
            return {"type": "auth", "proof": proof}
        case Welcome(position, node):
            return {"type": "welcome", "position": position, "node": node}
        case Event():
            return {"type": "event", "seq": message.seq, "event": message.envelope()}
        case Ack(seq):
            return {"type": "ack", "seq": seq}
        case Ping(nonce):
            return {"type": "ping", "nonce": nonce}
        case Pong(nonce):
            return {"type": "pong", "nonce": nonce}
        case Error(code, text):
            return {"type": "error", "code": code, "message": text}
    raise TypeError(f"not a protocol message: {message!r}")


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    # bool is an int subclass; a true/false where a number belongs is malformed.
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"{body.get('type')}.{name} must be {_kind_name(kind)}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def _sized(body: dict[str, Any], name: str, size: int) -> bytes:
    value = _field(body, name, bytes)
    if len(value) != size:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"{body['type']}.{name} must be {size} bytes")
    return value


def _seq(body: dict[str, Any], name: str, minimum: int) -> int:
    value = _field(body, name, int)
    if not minimum <= value <= MAX_SEQ:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"{body['type']}.{name}={value} is out of range")
    return value


def _nonce(body: dict[str, Any]) -> int:
    value = _field(body, "nonce", int)
    if not 0 <= value <= MAX_NONCE:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"{body['type']}.nonce={value} is not an unsigned 64-bit integer")
    return value


_PLAIN = (str, int, float, bytes, bool, type(None))


def _check_keys(value: dict[Any, Any], where: str) -> None:
    # msgpack's strict_map_key still lets bin keys through; the protocol allows only str.
    if not all(type(key) is str for key in value):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"{where} has a map key that is not a string")


def _check_data(value: Any) -> None:
    """``event.data`` holds only nil, bool, int, float, str, bin, arrays and string-keyed maps.

    The decoder already refuses keys other than str and bin, and extension types
    other than msgpack's timestamp (-1), which it hands over as an object:
    refuse bin keys and timestamps here.
    """
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, list):
        for item in value:
            _check_data(item)
    elif isinstance(value, dict):
        _check_keys(value, "event.data")
        for item in value.values():
            _check_data(item)
    else:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"event.data holds a {type(value).__name__}")


def correlation_id(value: Any) -> str | None:
    """``event.correlationid`` if it is one (a str of 1..128 of ``A-Za-z0-9._:-``, not starting with
    punctuation); anything else counts as absent. It is a diagnostic: a bad one must never stop the
    stream (a MALFORMED_FRAME would be resent forever), so it is dropped, not refused."""
    if isinstance(value, str) and len(value) <= MAX_CORRELATION_ID and _CORRELATION_ID.fullmatch(value):
        return value
    return None


def from_wire(body: dict[str, Any]) -> Message:
    """A decoded frame body → a typed message; unknown types are UNEXPECTED_FRAME."""
    kind = body["type"]
    if kind == "event":
        seq = _seq(body, "seq", 1)
        envelope = _field(body, "event", dict)
        _check_keys(envelope, "event")
        event_id = _field(envelope, "id", str)
        if not event_id:
            raise ProtocolError(ErrorCode.MALFORMED_FRAME, "event.id must not be empty (it is the idempotency key)")
        data = envelope.get("data")
        _check_data(data)
        return Event(
            seq=seq,
            id=event_id,
            type=_field(envelope, "type", str),
            source=_field(envelope, "source", str),
            time=_field(envelope, "time", str),
            data=data,
            correlation_id=correlation_id(envelope.get("correlationid")),
        )
    if kind == "ack":
        return Ack(_seq(body, "seq", 0))
    if kind == "ping":
        return Ping(_nonce(body))
    if kind == "pong":
        return Pong(_nonce(body))
    if kind == "hello":
        version = _field(body, "version", int)
        # Version 1 has no nonce; from version 2 on the sender challenges the receiver too.
        nonce = _sized(body, "nonce", NONCE_SIZE) if version >= 2 and "nonce" in body else None
        return Hello(version, _field(body, "stream", str), _field(body, "node", str), nonce)
    if kind == "challenge":
        proof = _sized(body, "proof", PROOF_SIZE) if "proof" in body else None
        return Challenge(_sized(body, "nonce", NONCE_SIZE), proof)
    if kind == "auth":
        return Auth(_field(body, "proof", bytes))
    if kind == "welcome":
        return Welcome(_seq(body, "position", 0), _field(body, "node", str))
    if kind == "error":
        return Error(_field(body, "code", str), _field(body, "message", str))
    raise ProtocolError(ErrorCode.UNEXPECTED_FRAME, f"unknown message type {kind!r}")

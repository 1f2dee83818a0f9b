"""Length-prefixed msgpack frames (PROTOCOL.md section 2), sans-IO.

:class:`FrameDecoder` takes bytes in whatever pieces the transport delivers
and returns complete message maps. It checks the length prefix against the
maximum *before* waiting for or allocating a body, so a hostile 4 GiB prefix
costs nothing.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from protocol.errors import ErrorCode, ProtocolError

DEFAULT_MAX_FRAME_SIZE = 1 << 20
_PREFIX = struct.Struct(">I")
PREFIX_SIZE = _PREFIX.size


def encode_frame(message: dict[str, Any], max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    if len(body) > max_frame_size:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE, f"frame body of {len(body)} bytes exceeds {max_frame_size}"
        )
    return _PREFIX.pack(len(body)) + body


def _no_extensions(code: int, data: bytes) -> Any:
    raise ValueError(f"msgpack extension type {code} is not allowed")


def decode_body(body: bytes) -> dict[str, Any]:
    """One frame body → its message map; every failure is MALFORMED_FRAME.

    Map keys must be strings at every depth (``event.data`` included) and no
    msgpack extension type may appear (PROTOCOL.md section 2).
    """
    try:
        message = msgpack.unpackb(body, raw=False, strict_map_key=True, use_list=True, ext_hook=_no_extensions,
                                  timestamp=0)
    except msgpack.ExtraData:
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "trailing bytes after the message") from None
    except Exception as exc:  # msgpack raises many types for bad input
        raise ProtocolError(ErrorCode.MALFORMED_FRAME,
                            f"body is not valid msgpack ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(message, dict):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, f"body is a {type(message).__name__}, not a map")
    if not all(type(key) is str for key in message):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "body has a map key that is not a string")
    if not isinstance(message.get("type"), str):
        raise ProtocolError(ErrorCode.MALFORMED_FRAME, "body has no string 'type' field")
    return message


class FrameDecoder:
    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        self._buffer = bytearray()
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Append ``data``; return every frame now complete, in order.

        After an error the decoder stays failed: a byte stream has no way to
        resynchronise once a frame boundary is lost.
        """
        if self._failed is not None:
            raise self._failed
        self._buffer += data
        messages: list[dict[str, Any]] = []
        offset = 0
        buffer = self._buffer
        try:
            while len(buffer) - offset >= PREFIX_SIZE:
                (length,) = _PREFIX.unpack_from(buffer, offset)
                if length > self.max_frame_size:
                    raise ProtocolError(
                        ErrorCode.FRAME_TOO_LARGE,
                        f"length prefix {length} exceeds maximum frame size {self.max_frame_size}",
                    )
                if length == 0:
                    raise ProtocolError(ErrorCode.MALFORMED_FRAME, "zero-length frame")
                end = offset + PREFIX_SIZE + length
                if len(buffer) < end:
                    break
                messages.append(decode_body(bytes(buffer[offset + PREFIX_SIZE : end])))
                offset = end
        except ProtocolError as exc:
            self._failed = exc
            raise
        finally:
            del buffer[:offset]
        return messages

"""The protocol's error codes and exception types (PROTOCOL.md section 7)."""

from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    MALFORMED_FRAME = "MALFORMED_FRAME"
    UNEXPECTED_FRAME = "UNEXPECTED_FRAME"
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    UNKNOWN_STREAM = "UNKNOWN_STREAM"
    AUTH_FAILED = "AUTH_FAILED"
    SEQUENCE_GAP = "SEQUENCE_GAP"
    HEARTBEAT_TIMEOUT = "HEARTBEAT_TIMEOUT"
    POSITION_AHEAD = "POSITION_AHEAD"
    POSITION_BEHIND_RETENTION = "POSITION_BEHIND_RETENTION"
    APPLY_FAILED = "APPLY_FAILED"
    REPLACED = "REPLACED"
    SHUTTING_DOWN = "SHUTTING_DOWN"


class ProtocolError(Exception):
    """This side detected a violation; ``code`` goes into the error frame it sends."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


# Refusals that retrying cannot cure without an operator (PROTOCOL.md section 7): a sender
# backs off straight to its cap and logs them at error level. FRAME_TOO_LARGE is one: the
# stream is gap-free, so the next attempt would carry the same too-large event again.
PERMANENT = frozenset({ErrorCode.AUTH_FAILED.value, ErrorCode.UNKNOWN_STREAM.value,
                       ErrorCode.UNSUPPORTED_VERSION.value, ErrorCode.POSITION_AHEAD.value,
                       ErrorCode.POSITION_BEHIND_RETENTION.value, ErrorCode.FRAME_TOO_LARGE.value})


class BehindRetention(ProtocolError):
    """The receiver's durable position is older than the oldest event the sender still retains."""

    def __init__(self, position: int, oldest_retained: int) -> None:
        super().__init__(
            ErrorCode.POSITION_BEHIND_RETENTION,
            f"receiver is at {position} but the oldest event still retained is {oldest_retained}: "
            f"{oldest_retained - 1 - position} events were pruned; reconcile, then move the receiver "
            f"to {oldest_retained - 1} (ticketflow link advance)")
        self.position = position
        self.oldest_retained = oldest_retained

    @property
    def missing(self) -> int:
        return self.oldest_retained - 1 - self.position


class RemoteError(Exception):
    """The peer sent an error frame and is closing the connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"peer error {code}: {message}")
        self.code = code
        self.message = message

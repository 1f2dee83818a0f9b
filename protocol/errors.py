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
    APPLY_FAILED = "APPLY_FAILED"
    REPLACED = "REPLACED"
    SHUTTING_DOWN = "SHUTTING_DOWN"


class ProtocolError(Exception):
    """This side detected a violation; ``code`` goes into the error frame it sends."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class RemoteError(Exception):
    """The peer sent an error frame and is closing the connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"peer error {code}: {message}")
        self.code = code
        self.message = message

"""TicketFlow link protocol v2 (see PROTOCOL.md).

Sans-IO core (no sockets, no asyncio): :mod:`protocol.framing`,
:mod:`protocol.messages`, :mod:`protocol.session`.
Thin asyncio adapter: :mod:`protocol.sender`, :mod:`protocol.receiver`.
"""

from protocol.errors import ErrorCode, ProtocolError, RemoteError
from protocol.messages import PROTOCOL_VERSION, Event

__all__ = ["ErrorCode", "ProtocolError", "RemoteError", "Event", "PROTOCOL_VERSION"]

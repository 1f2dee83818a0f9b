"""What a state-changing store call answers: a domain outcome and its body, never an HTTP status."""

from __future__ import annotations

from typing import Any, NamedTuple


class Outcome(NamedTuple):
    """``name`` says what happened (``held``, ``seat_unavailable``, ``hold_lost`` ...; the stored
    functions in ``reservation_daemon/sql/functions/`` list theirs). ``body`` is the resource on
    success, the details of a refusal otherwise (``{}`` if none). The API layer
    (``reservation_daemon.api.ANSWERS``) turns it into an HTTP status and body.
    """

    name: str
    body: dict[str, Any]

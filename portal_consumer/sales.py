"""What each payment event means for the sale: finalize, release, or refund a lost hold.

Two halves:

- :func:`decide` is the rule, and pure: given the event and the peers' answers so far,
  the next step is either :class:`Ask` (call a peer) or :class:`Done` (the outcome and
  the notifications to record). It raises :class:`Unprocessable` for an event that lacks
  what it needs and :class:`UnexpectedAnswer` for a peer answer it cannot act on.
- :class:`SaleFinalizer` does the I/O: the dedupe check, the peer calls :func:`decide`
  asks for, and the record.

Effects are exactly once over at-least-once delivery: the calls to the other
daemons are idempotent (confirm, release and refund answer the same when
repeated), and the portal's own effect — the notification — is committed
together with the event's dedupe record. A redelivered event finds its
record and does nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import structlog

from deploy.runtime import events
from portal_consumer.peers import Peers
from portal_consumer.store import Notification, PortalStore

log = structlog.get_logger("portal.sales")


class Unprocessable(ValueError):
    """The event cannot be processed as it is (missing fields): the only reason to dead-letter it."""


class UnexpectedAnswer(Exception):
    """A peer answered something other than the documented answers (a 400, a 401, a 200 of the wrong shape).

    Not the message's fault: it is retried with backoff, like an unavailable peer, until the
    answer is one the portal can act on. The text names the call and status, never a body that
    could carry a ticket code.
    """


Call = Literal["confirm", "release", "refund"]


@dataclass(frozen=True)
class Ask:
    """Call a peer: ``confirm`` (reservation_id), ``release`` (reservation_id, refund_id) or
    ``refund`` (order_id, reason, idempotency key)."""

    call: Call
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Done:
    outcome: str
    notifications: tuple[Notification, ...] = ()


PeerAnswer = tuple[int, Any]  # (HTTP status, body)


def _unexpected(call: str, status: int, body: Any) -> UnexpectedAnswer:
    code = body.get("error", {}).get("code") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    return UnexpectedAnswer(f"{call} answered {status}" + (f" {code}" if isinstance(code, str) else ""))


def _payload(kind: str, data: Mapping[str, Any]) -> events.Payload | None:
    """The event's typed payload (deploy.runtime.events); None for a type the portal does not know."""
    try:
        return events.parse(kind, dict(data) if isinstance(data, Mapping) else data)
    except KeyError:
        return None
    except events.MalformedEvent as exc:
        raise Unprocessable(f"data lacks what {kind} needs: {exc}") from None


def decide(kind: str, data: Mapping[str, Any], answers: Mapping[Call, PeerAnswer]) -> Ask | Done:
    """The next step for a sale event of type ``kind``, given the peers' ``answers`` so far."""
    payload = _payload(kind, data)
    if isinstance(payload, events.PaymentSucceeded):
        return _finalize(payload, answers)
    if isinstance(payload, events.PaymentRefunded):
        return _release(payload, answers)
    if isinstance(payload, events.PaymentFailed):
        return Done("declined_noted", (Notification(payload.user_id, "payment_declined", payload.order_id, {
            "order_id": payload.order_id, "reason": payload.reason}),))
    return Done("ignored")


def _finalize(paid: events.PaymentSucceeded, answers: Mapping[Call, PeerAnswer]) -> Ask | Done:
    """Paid: the hold becomes a sale; if the hold is gone, the money goes back."""
    if "confirm" not in answers:
        return Ask("confirm", (paid.reservation_id,))
    status, body = answers["confirm"]
    summary = {"order_id": paid.order_id, "reservation_id": paid.reservation_id,
               "amount_minor": paid.amount_minor, "currency": paid.currency,
               "seats": [s.get("label") for s in paid.seats if isinstance(s, dict)],
               "tickets": [t.get("id") for t in paid.tickets if isinstance(t, dict)]}
    if status == 200 and isinstance(body, dict) and body.get("status") == "confirmed":
        return Done("sale_finalized", (Notification(paid.user_id, "purchase_confirmed", paid.order_id, summary),))
    if status not in (404, 409):
        raise _unexpected("reservation confirm", status, body)
    # The hold behind this payment is gone (expired and perhaps re-held by someone
    # else): the seats were never ours to sell. Give the money back.
    if "refund" not in answers:
        return Ask("refund", (paid.order_id, "hold_lost", f"portal-hold-lost-{paid.order_id}"))
    refund_status, refund = answers["refund"]
    if refund_status != 200:
        raise _unexpected("billing refund", refund_status, refund)
    return Done("refunded_hold_lost", (Notification(
        paid.user_id, "sale_failed_refunded", paid.order_id,
        {**summary, "reason": "the seat hold expired before the sale could be completed; the payment was refunded"}),))


def _release(refunded: events.PaymentRefunded, answers: Mapping[Call, PeerAnswer]) -> Ask | Done:
    """Refunded: the sold seats go back on sale."""
    if "release" not in answers:
        return Ask("release", (refunded.reservation_id, refunded.refund_id))
    status, body = answers["release"]
    if status == 404:
        return Done("nothing_to_release")
    if status != 200:
        raise _unexpected("reservation release", status, body)
    if refunded.reason == "hold_lost":
        return Done("released_after_hold_lost")  # the buyer was told when the sale failed
    return Done("seats_released", (Notification(refunded.user_id, "refund_issued", refunded.order_id, {
        "order_id": refunded.order_id, "amount_minor": refunded.amount_minor,
        "currency": refunded.currency, "reason": refunded.reason}),))


class SaleFinalizer:
    """The I/O around :func:`decide`: dedupe, peer calls, the record."""

    def __init__(self, store: PortalStore, peers: Peers) -> None:
        self.store = store
        self.peers = peers

    async def handle(self, event: dict[str, Any]) -> str:
        """Process one CloudEvent; returns its outcome.

        Raises PeerUnavailable or UnexpectedAnswer to be retried, Unprocessable for an event that
        lacks what it needs.
        """
        if await self.store.is_processed(event["id"]):
            return "duplicate"
        data, kind = event["data"], event["type"]
        answers: dict[Call, PeerAnswer] = {}
        while isinstance(step := decide(kind, data, answers), Ask):
            answers[step.call] = await self._ask(step)
        recorded = await self.store.record(event["id"], kind, data.get("order_id"), step.outcome,
                                           list(step.notifications))
        if recorded:
            log.info("sale_event_processed", event_id=event["id"], type=kind, order_id=data.get("order_id"),
                     outcome=step.outcome)
        return step.outcome if recorded else "duplicate"

    async def _ask(self, step: Ask) -> PeerAnswer:
        if step.call == "confirm":
            return await self.peers.confirm(*step.args)
        if step.call == "release":
            return await self.peers.release_sold(*step.args)
        order_id, reason, key = step.args
        return await self.peers.refund(order_id, reason, key=key)

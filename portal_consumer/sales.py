"""What each payment event means for the sale: finalize, release, or refund a lost hold.

Effects are exactly once over at-least-once delivery: the calls to the other
daemons are idempotent (confirm, release and refund answer the same when
repeated), and the portal's own effect — the notification — is committed
together with the event's dedupe record. A redelivered event finds its
record and does nothing.
"""

from __future__ import annotations

from typing import Any

import structlog

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


def _answer(call: str, status: int, body: Any) -> UnexpectedAnswer:
    code = body.get("error", {}).get("code") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
    return UnexpectedAnswer(f"{call} answered {status}" + (f" {code}" if isinstance(code, str) else ""))


def _need(data: dict[str, Any], *fields: str) -> None:
    missing = [f for f in fields if not isinstance(data.get(f), str)]
    if missing:
        raise Unprocessable(f"data lacks {', '.join(missing)}")


class SaleFinalizer:
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
        data = event["data"]
        kind = event["type"]
        if kind == "payment.succeeded":
            outcome, notes = await self._finalize(data)
        elif kind == "payment.refunded":
            outcome, notes = await self._release(data)
        elif kind == "payment.failed":
            _need(data, "order_id", "user_id")
            outcome, notes = "declined_noted", [Notification(data["user_id"], "payment_declined", data["order_id"], {
                "order_id": data["order_id"], "reason": data.get("reason")})]
        else:
            outcome, notes = "ignored", []
        recorded = await self.store.record(event["id"], kind, data.get("order_id"), outcome, notes)
        if recorded:
            log.info("sale_event_processed", event_id=event["id"], type=kind, order_id=data.get("order_id"),
                     outcome=outcome)
        return outcome if recorded else "duplicate"

    async def _finalize(self, data: dict[str, Any]) -> tuple[str, list[Notification]]:
        _need(data, "order_id", "reservation_id", "user_id")
        status, body = await self.peers.confirm(data["reservation_id"])
        summary = {"order_id": data["order_id"], "reservation_id": data["reservation_id"],
                   "amount_minor": data.get("amount_minor"), "currency": data.get("currency"),
                   "seats": [s.get("label") for s in data.get("seats", [])],
                   "tickets": [t.get("id") for t in data.get("tickets", [])]}
        if status == 200 and body.get("status") == "confirmed":
            return "sale_finalized", [Notification(data["user_id"], "purchase_confirmed", data["order_id"], summary)]
        if status in (404, 409):
            # The hold behind this payment is gone (expired and perhaps re-held by someone
            # else): the seats were never ours to sell. Give the money back.
            refund_status, refund = await self.peers.refund(data["order_id"], "hold_lost",
                                                            key=f"portal-hold-lost-{data['order_id']}")
            if refund_status != 200:
                raise _answer("billing refund", refund_status, refund)
            return "refunded_hold_lost", [Notification(data["user_id"], "sale_failed_refunded", data["order_id"],
                                                       {**summary, "reason": "the seat hold expired before the "
                                                        "sale could be completed; the payment was refunded"})]
        raise _answer("reservation confirm", status, body)

    async def _release(self, data: dict[str, Any]) -> tuple[str, list[Notification]]:
        _need(data, "order_id", "reservation_id", "user_id")
        status, body = await self.peers.release_sold(data["reservation_id"], data.get("refund_id"))
        if status == 404:
            return "nothing_to_release", []
        if status != 200:
            raise _answer("reservation release", status, body)
        if data.get("reason") == "hold_lost":
            return "released_after_hold_lost", []  # the buyer was told when the sale failed
        return "seats_released", [Notification(data["user_id"], "refund_issued", data["order_id"], {
            "order_id": data["order_id"], "amount_minor": data.get("amount_minor"),
            "currency": data.get("currency"), "reason": data.get("reason")})]

"""The portal's calls to the reservation and billing daemons, as the ``service`` role.

Built on :class:`deploy.runtime.peer.Peer` (timeouts, the service token,
:class:`PeerUnavailable` for "try again later").
"""

from __future__ import annotations

from typing import Any

from deploy.runtime.peer import Peer, PeerUnavailable, ServiceToken

__all__ = ["PeerUnavailable", "Peers"]


class Peers:
    def __init__(self, reservation_url: str, billing_url: str, timeout: float, token_file: str = "") -> None:
        token = ServiceToken(token_file)
        self.reservation = Peer(reservation_url, token, timeout)
        self.billing = Peer(billing_url, token, timeout)

    async def start(self) -> None:
        await self.reservation.start()
        await self.billing.start()

    async def close(self) -> None:
        await self.reservation.close()
        await self.billing.close()

    async def confirm(self, reservation_id: str) -> tuple[int, Any]:
        return await self.reservation.call("POST", f"/api/reservations/{reservation_id}/confirm")

    async def release_sold(self, reservation_id: str, refund_id: str | None) -> tuple[int, Any]:
        """Give a refunded sale's seats back; the reservation daemon checks the refund with billing."""
        return await self.reservation.call("POST", f"/api/reservations/{reservation_id}/release",
                                           {"refund_id": refund_id})

    async def refund(self, order_id: str, reason: str, key: str) -> tuple[int, Any]:
        return await self.billing.call("POST", f"/api/orders/{order_id}/refund", {"reason": reason},
                                       {"Idempotency-Key": key})

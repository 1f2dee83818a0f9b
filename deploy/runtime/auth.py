"""Who is calling: bearer tokens, roles, and the one mechanism that enforces them.

Billing issues short-lived EdDSA (Ed25519) JWTs; every daemon verifies them
offline with the public keys (PyJWT), so no call per request. A token names
its signing key in the ``kid`` header, so a new key can sign while old public
keys still verify tokens issued before the rotation.

Roles:

- ``buyer``     signs up in billing; holds seats, pays, sees what it owns;
- ``organizer`` creates events, sees every order of its own events, refunds;
- ``door``      checks tickets in and nothing else;
- ``service``   the daemons and operator tools calling each other.

Handlers read the caller from ``request["principal"]`` (:func:`principal`),
always a :class:`Principal` (anonymous callers get :data:`ANONYMOUS`).
"""

from __future__ import annotations

from dataclasses import dataclass

BUYER, ORGANIZER, DOOR, SERVICE = "buyer", "organizer", "door", "service"
ROLES = (BUYER, ORGANIZER, DOOR, SERVICE)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or the anonymous one)."""

    subject: str  # user id for people, service name for services, "" when anonymous
    role: str | None  # one of ROLES, None when anonymous
    token_id: str | None = None  # the token's jti (for logout)

    @property
    def anonymous(self) -> bool:
        return self.role is None

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE


ANONYMOUS = Principal("", None)


def principal(request) -> Principal:
    """The caller of ``request`` (set by the authentication middleware; anonymous otherwise)."""
    return request.get("principal", ANONYMOUS)

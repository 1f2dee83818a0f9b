"""Who is calling: bearer tokens, roles, and the one mechanism that enforces them.

Billing issues short-lived EdDSA (Ed25519) JWTs (PyJWT over ``cryptography``);
every daemon verifies them offline with the public keys, so there is no call
per request. A token names its signing key in the ``kid`` header (the key's
thumbprint), so a new key can sign while the old public key still verifies
the tokens issued before the rotation.

Roles:

- ``buyer``     signs up in billing; holds seats, pays, sees what it owns;
- ``organizer`` creates events, sees every order of its own events, refunds;
- ``door``      checks tickets in and nothing else;
- ``operator``  runs the stack: the portal's operators' console (status, dead letters, drills);
- ``service``   the daemons and operator tools calling each other.

Each HTTP operation declares who may call it in the daemon's OpenAPI document
(``security: [{"bearer": [roles...]}]``, or ``[]`` for public), and
:func:`auth_middleware` enforces exactly that declaration for every request:
401 (with ``WWW-Authenticate``) for a missing or bad token, 403 for a valid
token without the role. Resource ownership (``x-ticketflow-owner``) is decided
by the handler through :func:`require_visible`, which answers 404 so that ids
reveal nothing. Handlers read the caller from :func:`principal`.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import structlog
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from deploy.runtime.http import ApiError

log = structlog.get_logger("auth")

BUYER, ORGANIZER, DOOR, OPERATOR, SERVICE = "buyer", "organizer", "door", "operator", "service"
ROLES = (BUYER, ORGANIZER, DOOR, OPERATOR, SERVICE)
PEOPLE = (BUYER, ORGANIZER, DOOR, OPERATOR)

ISSUER = "ticketflow-billing"
AUDIENCE = "ticketflow"
ALGORITHM = "EdDSA"
SCHEME = "bearer"  # the securitySchemes entry every document declares
OWNER_EXTENSION = "x-ticketflow-owner"  # the operation acts on a resource only its owner (and staff) may see


@dataclass(frozen=True)
class Principal:
    """An authenticated caller (or the anonymous one)."""

    subject: str  # user id for people, service name for services, "" when anonymous
    role: str | None  # one of ROLES, None when anonymous
    token_id: str | None = None  # the token's jti (for logout)
    expires_at: float | None = None

    @property
    def anonymous(self) -> bool:
        return self.role is None

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE

    @property
    def scope(self) -> str:
        """What an Idempotency-Key is scoped to: another caller's key never finds this caller's answer."""
        return f"{self.role or 'anonymous'}:{self.subject}"


ANONYMOUS = Principal("", None)


def principal(request: web.Request) -> Principal:
    """The caller of ``request`` (set by :func:`auth_middleware`; anonymous otherwise)."""
    return request.get("principal", ANONYMOUS)


# --- errors ------------------------------------------------------------------------


class Unauthorized(ApiError):
    """No credential, or one that does not verify: 401 with a ``WWW-Authenticate`` challenge (RFC 6750)."""

    status, code = 401, "UNAUTHORIZED"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        challenge = 'Bearer realm="ticketflow"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    """A known caller without the role this operation needs."""

    status, code = 403, "FORBIDDEN"


class InvalidToken(Exception):
    """The token does not verify (bad signature, unknown key, expired, wrong audience, malformed)."""


# --- keys ------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """A key's id: the start of its SHA-256 thumbprint, so it follows the key wherever the file goes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(directory: Path) -> tuple[Path, Path, str]:
    """A new Ed25519 pair under ``directory``: ``signing/<kid>.pem`` (0600) and ``public/<kid>.pem``."""
    private = Ed25519PrivateKey.generate()
    kid = key_id(private.public_key())
    signing_dir, public_dir = directory / "signing", directory / "public"
    signing_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_dir.mkdir(parents=True, exist_ok=True)
    signing = signing_dir / f"{kid}.pem"
    fd = os.open(signing, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    public = public_dir / f"{kid}.pem"
    public.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
    return signing, public, kid


def load_signing_key(path: Path) -> tuple[Ed25519PrivateKey, str]:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key, key_id(key.public_key())


def _public_key_files(location: Path) -> list[Path]:
    if location.is_dir():
        return sorted(location.glob("*.pem"))
    return [location]


class TokenIssuer:
    """Signs tokens (billing only). Re-reads its key file when it changes, so a rotation needs no restart."""

    def __init__(self, signing_key: Path, ttl_seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.path = signing_key
        self.ttl = ttl_seconds
        self.clock = clock
        self._loaded: tuple[float, Ed25519PrivateKey, str] | None = None

    def _key(self) -> tuple[Ed25519PrivateKey, str]:
        mtime = self.path.stat().st_mtime
        if self._loaded is None or self._loaded[0] != mtime:
            key, kid = load_signing_key(self.path)
            self._loaded = (mtime, key, kid)
            log.info("signing_key_loaded", kid=kid)
        return self._loaded[1], self._loaded[2]

    def issue(self, subject: str, role: str, ttl_seconds: float | None = None,
              extra: dict[str, Any] | None = None) -> tuple[str, Principal]:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        key, kid = self._key()
        now = int(self.clock())
        expires = now + int(ttl_seconds if ttl_seconds is not None else self.ttl)
        jti = str(uuid.uuid4())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "role": role, "iat": now, "nbf": now - 5,
                  "exp": expires, "jti": jti, **(extra or {})}
        token = jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})
        return token, Principal(subject, role, jti, float(expires))


class TokenVerifier:
    """Verifies tokens offline against the public keys in a directory (or one file).

    A token signed by a key the verifier has not seen makes it re-read the
    directory (at most once per ``reload_interval``), so publishing a new public
    key is all a rotation needs on the verifying side.
    """

    def __init__(self, public_keys: Path, reload_interval: float = 5.0, leeway: float = 5.0,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 cache_size: int = 4096) -> None:
        self.location = public_keys
        self.reload_interval = reload_interval
        self.leeway = leeway
        self.clock = clock
        self.wall_clock = wall_clock
        self.cache_size = cache_size
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._loaded_at = float("-inf")
        # Tokens that verified, by their exact text: (caller, the time from which they are refused).
        self._verified: dict[str, tuple[Principal, float]] = {}
        self.reload()

    def reload(self) -> None:
        keys = {}
        for path in _public_key_files(self.location):
            key = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(key, Ed25519PublicKey):
                keys[key_id(key)] = key
        if not keys:
            raise ValueError(f"{self.location}: no Ed25519 public key (*.pem) found")
        self._keys = keys
        self._loaded_at = self.clock()
        self._verified.clear()  # a key that left the directory must not keep verifying its tokens

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, token: str) -> Principal:
        """The caller a token names, or :class:`InvalidToken`.

        A token that verified is remembered by its exact text until it expires (``exp`` plus the
        leeway, exactly when a full verification would start refusing it), so a caller's repeated
        requests cost a dictionary lookup instead of an Ed25519 verification. Only successes are
        remembered; a different string (forged, altered) is verified in full. Nothing else about a
        token changes with time before it expires (``nbf`` and ``iat`` only become more acceptable),
        and logout is honoured as before: offline verifiers never saw revocations (README, "Logout").
        """
        cached = self._verified.get(token)
        if cached is not None:
            if self.wall_clock() < cached[1]:
                return cached[0]
            del self._verified[token]
        caller = self._verify(token)
        if len(self._verified) >= self.cache_size:
            self._forget_some()
        self._verified[token] = (caller, int(caller.expires_at or 0) + self.leeway)
        return caller

    def _forget_some(self) -> None:
        """Make room: drop expired tokens; if none had expired, the oldest quarter (insertion order)."""
        now = self.wall_clock()
        expired = [token for token, (_, until) in self._verified.items() if until <= now]
        for token in expired or list(self._verified)[:max(1, self.cache_size // 4)]:
            del self._verified[token]

    def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"malformed token: {exc}") from None
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise InvalidToken("token names no key (kid)")
        if kid not in self._keys and self.clock() - self._loaded_at >= self.reload_interval:
            try:
                self.reload()
            except (OSError, ValueError) as exc:
                log.warning("public_keys_reload_failed", reason=repr(exc))
        key = self._keys.get(kid)
        if key is None:
            raise InvalidToken("token signed by an unknown key")
        try:
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                leeway=self.leeway, options={"require": ["exp", "iat", "sub", "jti"]})
        except jwt.PyJWTError as exc:
            raise InvalidToken(str(exc)) from None
        role = claims.get("role")
        if role not in ROLES or not isinstance(claims["sub"], str) or not claims["sub"]:
            raise InvalidToken("token has no valid role or subject")
        return Principal(claims["sub"], role, str(claims["jti"]), float(claims["exp"]))


def read_token_file(path: Path) -> str:
    """A service credential: the token the stack provisioned for this daemon."""
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{path} is empty")
    return token


# --- declaring and enforcing access ---------------------------------------------------


def access(*roles: str, owner: bool = False) -> dict[str, Any]:
    """The OpenAPI fields of an operation that needs one of ``roles`` (none: public).

    ``owner=True``: buyers reach only their own resources; anyone else gets 404.
    """
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {sorted(unknown)}")
    if not roles:
        return {"security": []}
    return {"security": [{SCHEME: list(roles)}], OWNER_EXTENSION: owner}


def allowed_roles(operation: dict[str, Any]) -> tuple[str, ...] | None:
    """None for a public operation, else the roles that may call it."""
    requirements = operation["security"]
    if not requirements:
        return None
    return tuple(role for requirement in requirements for role in requirement.get(SCHEME, ()))


def operation_table(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path template) -> operation, for every operation of ``spec``."""
    return {(method.upper(), path): operation
            for path, operations in spec["paths"].items() for method, operation in operations.items()}


def undeclared_operations(spec: dict[str, Any]) -> list[str]:
    """Operations of ``spec`` that say nothing about who may call them."""
    return [f"{method} {path}" for (method, path), op in operation_table(spec).items() if "security" not in op]


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <token>'", invalid_token=True)
    return token.strip()


Revoked = Callable[[Principal], Awaitable[bool]]


def auth_middleware(spec: dict[str, Any], verifier: TokenVerifier | None, is_revoked: Revoked | None = None):
    """Authenticate every request and enforce the operation's declared ``security``.

    A route the document does not declare is refused (fail closed): a handler
    added without a rule cannot be reached. On a public operation a bad or stale
    token makes the caller anonymous rather than failing the request. ``is_revoked`` (billing) checks a
    logged-out token; other daemons honour logout when the short token expires.
    """
    table = operation_table(spec)
    if undeclared_operations(spec):
        raise ValueError(f"operations without a security declaration: {undeclared_operations(spec)}")

    async def authenticate(request: web.Request) -> Principal:
        token = bearer_token(request)
        if token is None:
            return ANONYMOUS
        if verifier is None:
            raise Unauthorized("this daemon has no public keys to verify tokens with", invalid_token=True)
        try:
            caller = verifier.verify(token)
        except InvalidToken as exc:
            raise Unauthorized(f"invalid token: {exc}", invalid_token=True) from None
        if is_revoked is not None and await is_revoked(caller):
            raise Unauthorized("this token was revoked (logged out)", invalid_token=True)
        return caller

    @web.middleware
    async def middleware(request: web.Request, handler):
        route = request.match_info.route
        template = route.resource.canonical if route.resource is not None else None
        operation = table.get((request.method, template)) if template else None
        if operation is None and request.method == "HEAD":
            operation = table.get(("GET", template))
        if operation is None:
            if route.resource is None or request.method == "OPTIONS":
                return await handler(request)  # 404 / 405 from the router: nothing to protect
            raise Forbidden("this operation declares no access rule", code="UNDECLARED_OPERATION")
        roles = allowed_roles(operation)
        try:
            caller = await authenticate(request)
        except Unauthorized:
            if roles is not None:
                raise
            caller = ANONYMOUS  # a public operation: a stale or bad token only makes the caller anonymous
        request["principal"] = caller
        if roles is not None:
            if caller.anonymous:
                raise Unauthorized("this operation needs a bearer token")
            if caller.role not in roles:
                raise Forbidden(f"a {caller.role} may not do this (needs {' or '.join(roles)})")
        return await handler(request)

    return middleware


def require_visible(caller: Principal, *, owner: str | None, organizer: str | None = None,
                    not_found: ApiError) -> None:
    """Let the owner, the organizer of the resource's event, and services through; 404 for anyone else.

    A 404 rather than a 403, so that trying ids tells a stranger nothing about what exists.
    """
    if caller.is_service:
        return
    if caller.role == BUYER and owner is not None and caller.subject == owner:
        return
    if caller.role == ORGANIZER and organizer is not None and caller.subject == organizer:
        return
    raise not_found


"""Credentials for tests: one key pair per test session, tokens minted for any role.

Daemons under test get the public keys, billing the signing key, and every
daemon a service token (``auth_env``); clients get tokens from ``token``.
Tokens are real EdDSA JWTs that the daemons verify exactly as in production.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import uuid
from functools import lru_cache
from pathlib import Path

from deploy.runtime.auth import SERVICE, TokenIssuer
from deploy.ops.stack.keys import Keys


@lru_cache(maxsize=1)
def _keys() -> Keys:
    root = Path(tempfile.mkdtemp(prefix="tf-test-keys-"))
    atexit.register(shutil.rmtree, root, True)
    keys = Keys(root)
    keys.ensure()
    return keys


@lru_cache(maxsize=1)
def _issuer() -> TokenIssuer:
    return TokenIssuer(_keys().current, 3600)


def auth_env() -> dict[str, str]:
    """What every daemon under test needs to verify (and billing to issue) tokens, and to call others."""
    keys = _keys()
    return {**keys.env(), "TICKETFLOW_SERVICE_TOKEN_FILE": str(keys.token_file("portal"))}


def token(role: str = SERVICE, subject: str | None = None, ttl: float | None = None) -> str:
    """A token for ``role``; people get a fresh user id unless ``subject`` names one."""
    subject = subject or ("test-service" if role == SERVICE else str(uuid.uuid4()))
    return _issuer().issue(subject, role, ttl)[0]


def bearer(role: str = SERVICE, subject: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(role, subject)}"}


def key_dir() -> Path:
    return _keys().dir


# Every kind of caller a fuzz test throws at a daemon, credentials that are not among them.
CALLER_KINDS = ("anonymous", "buyer", "organizer", "door", "service", "garbage", "basic", "expired")


def caller_headers(caller: str) -> dict[str, str]:
    if caller == "anonymous":
        return {}
    if caller == "garbage":
        return {"Authorization": "Bearer not.a.token"}
    if caller == "basic":
        return {"Authorization": "Basic dXNlcjpwYXNz"}
    if caller == "expired":
        return {"Authorization": f"Bearer {token('buyer', ttl=-60)}"}
    return {"Authorization": f"Bearer {token(caller)}"}

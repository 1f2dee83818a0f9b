"""A verified token is remembered by its exact text until it expires, and never longer.

TokenVerifier caches successes so that a caller's repeated requests skip the Ed25519
verification; these tests pin what must not change with the cache: expiry (with the
leeway) refuses a token at the same moment a full verification would, another string is
verified in full, a key leaving the directory stops its tokens, and memory stays bounded.
"""

import shutil
import tempfile
import time
from pathlib import Path

import jwt
import pytest

from deploy.runtime import auth
from deploy.runtime.auth import InvalidToken, TokenIssuer, TokenVerifier, generate_keypair


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys():
    root = Path(tempfile.mkdtemp(prefix="tf-token-cache-"))
    signing, public, kid = generate_keypair(root)
    yield signing, root / "public"
    shutil.rmtree(root, ignore_errors=True)


def counting(monkeypatch) -> list[str]:
    """Count the full (signature-checking) verifications."""
    calls: list[str] = []
    real = jwt.decode

    def decode(token, *args, **kwargs):
        calls.append(token)
        return real(token, *args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", decode)
    return calls


def test_a_verified_token_is_verified_in_full_once_then_remembered(keys, monkeypatch):
    signing, public = keys
    calls = counting(monkeypatch)
    token, minted = TokenIssuer(signing, 900).issue("u1", "buyer")
    verifier = TokenVerifier(public)
    first = verifier.verify(token)
    for _ in range(5):
        assert verifier.verify(token) == first
    assert first.subject == "u1" and first.role == "buyer" and first.token_id == minted.token_id
    assert calls == [token]


def test_a_remembered_token_is_answered_from_memory_only_until_exp_plus_leeway(keys, monkeypatch):
    signing, public = keys
    token, minted = TokenIssuer(signing, 60).issue("u1", "buyer")
    wall = Clock(time.time())
    verifier = TokenVerifier(public, leeway=5, wall_clock=wall)
    calls = counting(monkeypatch)
    verifier.verify(token)
    assert len(calls) == 1
    # PyJWT refuses from exp + leeway on: up to just before it, memory answers.
    wall.now = minted.expires_at + 5 - 0.01
    verifier.verify(token)
    assert len(calls) == 1
    # From exp + leeway on, memory no longer answers: the full verification decides again.
    wall.now = minted.expires_at + 5
    verifier.verify(token)  # (real time: the token is still valid, so the full check accepts it)
    assert len(calls) == 2


def test_an_expired_token_is_refused_even_after_it_was_remembered(keys):
    signing, public = keys
    issued_at = time.time() - 120  # exp = issued_at + 60: expired a minute ago, beyond the leeway
    token, minted = TokenIssuer(signing, 60, clock=lambda: issued_at).issue("u1", "buyer")
    wall = Clock(issued_at + 1)  # the verifier's clock says it was fresh: remembered then
    verifier = TokenVerifier(public, leeway=5, wall_clock=wall)
    verifier._verified[token] = (auth.Principal("u1", "buyer", minted.token_id, minted.expires_at),
                                 int(minted.expires_at) + 5)
    assert verifier.verify(token).subject == "u1"
    wall.now = time.time()
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_an_altered_or_foreign_token_is_verified_in_full_and_refused(keys, monkeypatch):
    signing, public = keys
    token, _ = TokenIssuer(signing, 900).issue("u1", "buyer")
    verifier = TokenVerifier(public)
    verifier.verify(token)
    calls = counting(monkeypatch)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    with pytest.raises(InvalidToken):
        verifier.verify(forged)
    with pytest.raises(InvalidToken):  # a refusal is not remembered: asked again, checked again
        verifier.verify(forged)
    assert calls == [forged, forged]


def test_a_key_that_leaves_the_directory_stops_its_remembered_tokens(keys):
    signing, public = keys
    old_token, _ = TokenIssuer(signing, 900).issue("u1", "buyer")
    clock = Clock(0.0)
    verifier = TokenVerifier(public, reload_interval=5, clock=clock)
    assert verifier.verify(old_token).subject == "u1"
    # Rotation with the old key withdrawn: a token of the new key makes the verifier re-read the keys.
    root = public.parent
    for pem in public.glob("*.pem"):
        pem.unlink()
    new_signing, _, _ = generate_keypair(root)
    new_token, _ = TokenIssuer(new_signing, 900).issue("u2", "buyer")
    clock.now = 10.0
    assert verifier.verify(new_token).subject == "u2"
    with pytest.raises(InvalidToken):
        verifier.verify(old_token)


def test_the_cache_is_bounded(keys):
    signing, public = keys
    issuer = TokenIssuer(signing, 900)
    verifier = TokenVerifier(public, cache_size=8)
    tokens = [issuer.issue(f"u{i}", "buyer")[0] for i in range(30)]
    for token in tokens:
        verifier.verify(token)
        assert len(verifier._verified) <= 8
    assert all(verifier.verify(t).subject == f"u{i}" for i, t in enumerate(tokens))

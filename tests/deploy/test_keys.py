"""Token keys: thumbprint key ids, verification offline, rotation without downtime."""

import time

import jwt
import pytest

from deploy.runtime.auth import BUYER, SERVICE, InvalidToken, TokenIssuer, TokenVerifier
from deploy.ops.stack.keys import Keys


def test_a_rotation_keeps_old_tokens_valid_and_verifiers_learn_the_new_key(tmp_path):
    keys = Keys(tmp_path)
    keys.ensure()
    issuer = TokenIssuer(keys.current, 900)
    verifier = TokenVerifier(keys.public, reload_interval=0)
    old_token, _ = issuer.issue("ann", BUYER)
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    assert verifier.verify(old_token).subject == "ann"

    new_kid = keys.rotate()
    assert new_kid != old_kid
    new_token, _ = issuer.issue("bob", BUYER)  # billing re-reads current.pem: no restart
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert verifier.verify(new_token).subject == "bob", "an unseen key id makes the verifier reload"
    assert verifier.verify(old_token).subject == "ann", "tokens signed before the rotation still verify"
    service = keys.token_file("portal").read_text().strip()
    assert jwt.get_unverified_header(service)["kid"] == new_kid, "service tokens are re-minted on rotation"
    assert verifier.verify(service).role == SERVICE


def test_tokens_that_must_not_verify(tmp_path):
    keys, stranger = Keys(tmp_path / "ours"), Keys(tmp_path / "theirs")
    keys.ensure()
    stranger.ensure()
    verifier = TokenVerifier(keys.public)
    foreign, _ = TokenIssuer(stranger.current, 900).issue("eve", SERVICE)
    expired, _ = TokenIssuer(keys.current, 900, clock=lambda: time.time() - 3600).issue("ann", BUYER)
    ours = jwt.get_unverified_header(TokenIssuer(keys.current, 900).issue("x", BUYER)[0])["kid"]
    claims = {"sub": "eve", "role": SERVICE, "iss": "ticketflow-billing", "aud": "ticketflow", "jti": "j",
              "iat": int(time.time()), "exp": int(time.time()) + 60}
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"kid": ours})
    hs256 = jwt.encode(claims, "a guessed secret", algorithm="HS256", headers={"kid": ours})
    for token in (foreign, expired, unsigned, hs256, "garbage", ""):
        with pytest.raises(InvalidToken):
            verifier.verify(token)

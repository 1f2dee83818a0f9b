"""Development credentials the stack provisions: the token signing key pair and service tokens.

Under ``<stack dir>/keys/``:

- ``signing/<kid>.pem`` (0600) and ``signing/current.pem``, a link to the key billing signs with;
- ``public/<kid>.pem``: every public key the daemons accept (old ones stay until their tokens expire);
- ``services/<name>.token``: a long-lived ``service`` token per caller (reservation, billing, portal,
  operator — the CLI's bench and walkthrough, prometheus — what scrapes ``/metrics``), re-minted when
  close to expiry or signed by a retired key.

``ticketflow keys rotate`` makes a new pair current without downtime: verifiers pick up a public key
they have not seen on first use, billing re-reads ``current.pem`` when it changes.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt

from deploy.runtime.auth import SERVICE, TokenIssuer, generate_keypair, load_signing_key

SERVICES = ("reservation", "billing", "portal", "operator", "prometheus")  # prometheus: scrapes /metrics
SERVICE_TOKEN_TTL = 30 * 24 * 3600
RENEW_BEFORE = 7 * 24 * 3600


class Keys:
    def __init__(self, root: Path) -> None:
        self.dir = root / "keys"
        self.current = self.dir / "signing" / "current.pem"
        self.public = self.dir / "public"
        self.services = self.dir / "services"

    def token_file(self, service: str) -> Path:
        return self.services / f"{service}.token"

    def env(self) -> dict[str, str]:
        return {"TICKETFLOW_TOKEN_SIGNING_KEY": str(self.current),
                "TICKETFLOW_TOKEN_PUBLIC_KEYS": str(self.public),
                "TICKETFLOW_SERVICE_TOKEN_FILE": str(self.token_file("operator"))}

    def ensure(self) -> str:
        """Create what is missing; returns what was done."""
        done = "present"
        if not self.current.exists():
            self._make_current()
            done = "created"
        renewed = self._ensure_service_tokens()
        return done + (f", service tokens minted: {', '.join(renewed)}" if renewed else "")

    def rotate(self) -> str:
        """A new signing key becomes current; the old public key stays so issued tokens keep working."""
        kid = self._make_current()
        self._ensure_service_tokens(force=True)
        return kid

    def _make_current(self) -> str:
        signing, _, kid = generate_keypair(self.dir)
        temporary = self.current.with_suffix(".tmp")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(signing.name)
        os.replace(temporary, self.current)  # atomic: billing never reads a half-switched key
        return kid

    def _ensure_service_tokens(self, force: bool = False) -> list[str]:
        self.services.mkdir(parents=True, exist_ok=True, mode=0o700)
        _, current_kid = load_signing_key(self.current)
        issuer = TokenIssuer(self.current, SERVICE_TOKEN_TTL)
        renewed = []
        for service in SERVICES:
            path = self.token_file(service)
            if not force and path.exists() and self._fresh(path.read_text().strip(), current_kid):
                continue
            token, _ = issuer.issue(service, SERVICE)
            fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(token + "\n")
            os.replace(path.with_suffix(".tmp"), path)
            renewed.append(service)
        return renewed

    @staticmethod
    def _fresh(token: str, current_kid: str) -> bool:
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return header.get("kid") == current_kid and claims.get("exp", 0) - time.time() > RENEW_BEFORE

"""Throwaway TLS certificates for link tests, made by the ``openssl`` command."""

from __future__ import annotations

import subprocess
from pathlib import Path


def throwaway_cert(where: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for ``name``, 127.0.0.1 and localhost; returns (cert, key) paths."""
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key

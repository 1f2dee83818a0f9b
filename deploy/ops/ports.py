"""Loopback ports for the private daemons a bench mode starts."""

from __future__ import annotations

import random
import socket


def free_port() -> int:
    """A loopback port below the kernel's ephemeral range (as the tests pick theirs) that nobody
    listens on now."""
    for _ in range(1000):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port between 20000 and 32000")

"""Daemons under test run as real processes, so crash tests can SIGKILL them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.support.auth import auth_env


# Load tests hold thousands of seats from one address (127.0.0.1); the per-route limits
# on holds and logins are switched on explicitly by the tests of those limits.
TEST_DEFAULTS = {"TICKETFLOW_RATE_LIMITS_ENABLED": "off"}


class DaemonProcess:
    def __init__(self, module: str, env: dict[str, str], log_path: Path, ready_url: str | None = None) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.ready_url = ready_url
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env={**os.environ, **TEST_DEFAULTS, **auth_env(), **self.env},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()

    async def wait_ready(self, timeout: float = 20.0) -> None:
        assert self.ready_url is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc is not None and self.proc.poll() is not None:
                    raise AssertionError(f"{self.module} exited ({self.proc.returncode}):\n{self.log_tail()}")
                try:
                    async with session.get(self.ready_url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                        if r.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError(f"{self.module} never became ready at {self.ready_url}:\n{self.log_tail()}")

    async def start_ready(self, timeout: float = 20.0) -> None:
        self.start()
        await self.wait_ready(timeout)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.module} did not stop within {timeout}s of SIGTERM:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

"""What every server of a topology can do: initialise, start, answer a probe, stop."""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import shutil
import subprocess
import time
from abc import ABC, abstractmethod
from pathlib import Path

from deploy.ops.stack import process
from deploy.ops.stack.settings import StackSettings

START_TIMEOUT = 120.0


class StackError(RuntimeError):
    """A server could not be installed, initialised or started; the message says why."""


class Server(ABC):
    name: str
    # apt package -> paths any one of which proves it is installed
    packages: dict[str, list[str]] = {}
    run_as: str | None = None  # unprivileged system user, for servers that refuse root

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.dir = settings.root / self.name
        self.pidfile = self.dir / "server.pid"
        self.logfile = self.dir / "server.log"

    # --- what each kind of server supplies ---------------------------------

    @abstractmethod
    def initialized(self) -> bool: ...

    @abstractmethod
    def initialize(self) -> None: ...

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str] | None]:
        """argv and environment (None = inherit) of the server process."""

    @abstractmethod
    async def probe(self) -> None:
        """Return only if the server answers a real query right now."""

    @abstractmethod
    def env(self) -> dict[str, str]:
        """``TICKETFLOW_*`` connection settings for daemons and tests."""

    async def after_ready(self) -> None:
        """Idempotent set-up that needs the server running (databases, users)."""

    stop_signal = "SIGTERM"

    # --- shared lifecycle ------------------------------------------------------

    def running(self) -> bool:
        return process.running_pid(self.pidfile) is not None

    def pid(self) -> int | None:
        return process.running_pid(self.pidfile)

    def up(self) -> str:
        """Bring the server up (idempotent); returns what was done."""
        if self.running() and self._probe_ok():
            return "already up"
        action = "started"
        if not self.initialized():
            self.initialize()
            action = "initialised and started"
        if not self.running():
            self.start()
        self.wait_ready()
        asyncio.run(self.after_ready())
        return action

    def start(self) -> None:
        argv, env = self.command()
        # A service user may not be able to enter the checkout; '/' is always enterable.
        cwd = self.dir if self.run_as is None else Path("/")
        process.spawn(argv, self.pidfile, self.logfile, user=self.run_as, env=env, cwd=cwd)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running():
                raise StackError(f"{self.name} exited during start-up; see {self.logfile}:\n{self.log_tail()}")
            try:
                asyncio.run(asyncio.wait_for(self.probe(), 5.0))
                return
            except Exception as exc:  # any probe failure just means "not yet"
                last_error = exc
            time.sleep(0.2)
        raise StackError(f"{self.name} did not answer within {timeout:.0f}s ({last_error!r}); see {self.logfile}")

    def _probe_ok(self) -> bool:
        try:
            asyncio.run(asyncio.wait_for(self.probe(), 5.0))
            return True
        except Exception:
            return False

    def status(self) -> str:
        if not self.running():
            # Something may answer on our port without being ours (another checkout's stack).
            return "up (not started from this directory)" if self._probe_ok() else "down"
        return "up" if self._probe_ok() else "starting or unhealthy"

    def stop(self) -> bool:
        import signal

        return process.stop(self.pidfile, getattr(signal, self.stop_signal))

    def kill(self) -> bool:
        return process.kill(self.pidfile)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- helpers -------------------------------------------------------------

    def private_dir(self, *parts: str) -> Path:
        """A directory only the server's user may enter (0700), created if needed.

        If the checkout sits under a directory the service user cannot
        traverse (e.g. /root), the data lives under /var/lib/ticketflow
        instead, keyed by the checkout, and ``.stack`` links to it.
        """
        home = self.dir
        if self.run_as is not None and not _traversable_by_others(self.settings.root):
            key = hashlib.sha256(str(self.settings.root).encode()).hexdigest()[:12]
            home = Path("/var/lib/ticketflow") / key / self.name
            home.mkdir(parents=True, exist_ok=True)
            link = self.dir / "private"
            self.dir.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(home)
        path = home.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        if self.run_as is not None:
            user = pwd.getpwnam(self.run_as)
            for p in [home, *[home.joinpath(*parts[: i + 1]) for i in range(len(parts))]]:
                os.chown(p, user.pw_uid, user.pw_gid)
                p.chmod(0o700)
        return path

    def run_setup(self, argv: list[str], **kwargs) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        cwd = self.dir if self.run_as is None else Path("/")
        result = subprocess.run(argv, capture_output=True, text=True, user=self.run_as, cwd=cwd, **kwargs)
        if result.returncode != 0:
            raise StackError(f"{argv[0]} failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")


def _traversable_by_others(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return False
    return True


def ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name], check=True)


def which(*candidates: str) -> str:
    for candidate in candidates:
        found = shutil.which(candidate) or (candidate if Path(candidate).is_file() else None)
        if found:
            return found
    raise StackError(f"none of {', '.join(candidates)} is installed")

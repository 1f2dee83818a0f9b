"""Process lifecycle shared by every daemon: uvloop, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from collections.abc import Callable
from typing import Protocol, TypeVar

import structlog
import uvloop

from deploy.runtime import logs
from deploy.runtime.config import DEV_LINK_SECRET, ConfigError, load

log = structlog.get_logger("service")
S = TypeVar("S")


class Daemon(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def serve(daemon: Daemon) -> None:
    """Start ``daemon``, run until SIGTERM or SIGINT, then stop it gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    await daemon.start()
    log.info("started")
    await stop.wait()
    log.info("stopping")
    await daemon.stop()
    log.info("stopped")


def instance_name(configured: str, http_port: int) -> str:
    """TICKETFLOW_INSTANCE, or host:port: what /api/instance and the link handshakes call this replica."""
    return configured or f"{socket.gethostname()}:{http_port}"


def dump_tasks() -> None:
    """SIGUSR1: print every asyncio task's stack to stderr, to see what a stuck daemon waits on."""
    import io

    for task in asyncio.all_tasks():
        out = io.StringIO()
        task.print_stack(file=out)
        print(f"--- {task.get_name()} {task.get_coro()!r}\n{out.getvalue()}", file=sys.stderr)


def main(service: str, settings_cls: type[S], make: Callable[[S], Daemon]) -> None:
    """Entry point of a daemon process: settings (exit 2 naming a bad variable), logs, loop."""
    try:
        settings = load(settings_cls)
    except ConfigError as exc:
        print(f"{service}: bad configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.configure(service, getattr(settings, "log_level", "info"))
    if getattr(settings, "link_secret", None) == DEV_LINK_SECRET:
        # Fine on a laptop; anywhere else anyone who can reach the link ports could feed the stream.
        log.warning("development_link_secret", hint="set TICKETFLOW_LINK_SECRET to a shared secret of your own")
    try:
        daemon = make(settings)  # checks what it cannot run without (keys, required settings)
    except ConfigError as exc:
        print(f"{service}: bad configuration: {exc}", file=sys.stderr)
        sys.exit(2)
    except (OSError, ValueError) as exc:  # a key file missing or not a key
        print(f"{service}: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    uvloop.run(serve(daemon))

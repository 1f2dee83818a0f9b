"""``ticketflow link advance``: move a receiver's position past events its sender no longer retains.

Only ever after a reconciliation, and hard to run by accident: it acts only on the
condition the sender itself reports on ``/ready`` (POSITION_BEHIND_RETENTION), only to
exactly the position the sender needs, only forward from the position the receiver has
right now (compare-and-set), and only with ``--confirm``; without it, it prints what it
would do and changes nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from deploy.ops.daemons import BY_NAME, LINKS, Link
from deploy.ops.stack.settings import StackSettings
from deploy.ops.status import probe
from deploy.ops.supervisor import daemon_env


class Refused(Exception):
    """The command will not act; the message says why and what to do."""


def _receiver_ops(link: Link, env: dict[str, str]) -> tuple[Callable[[], Awaitable[int]],
                                                            Callable[[int, int], Awaitable[bool]],
                                                            Callable[[], Awaitable[None]]]:
    """(read the receiver's durable position, compare-and-set it, close) through the receiver's own code."""
    from deploy.runtime.config import load

    if link.receiver == "billing":
        from billing_daemon.config import Settings
        from billing_daemon.store import BillingStore
        from deploy.runtime.mysql import MariaDB

        db = MariaDB(load(Settings, env).mariadb_dsn)
        store = BillingStore(db)
        return (lambda: store.stream_position(link.stream),
                lambda expected, to: store.advance_stream_position(link.stream, expected, to), db.close)

    from bridge_daemon.config import Settings as BridgeSettings
    from bridge_daemon.streams import Publisher

    publisher = Publisher(load(BridgeSettings, env))

    async def swap(expected: int, to: int) -> bool:
        # The bridge cannot apply anything meanwhile: its sender refuses to stream to it.
        if await publisher.position(link.stream) != expected:
            return False
        await publisher.save_position(link.stream, to)
        return True

    return (lambda: publisher.position(link.stream)), swap, publisher.close


async def advance(link: Link, to: int, confirm: bool, env: dict[str, str]) -> str:
    url = BY_NAME[link.sender].url(env) + "/ready"
    state, checks = probe(url)
    problem = checks.get("link")
    if state == "down":
        raise Refused(f"{link.sender} does not answer at {url}: this command acts only on a gap the sender "
                      "reports, so start it first")
    if not isinstance(problem, dict) or problem.get("error") != "POSITION_BEHIND_RETENTION" \
            or problem.get("stream") != link.stream:
        raise Refused(f"{link.sender} reports no retention gap on {link.name} (its /ready is {state}); nothing to do")
    needed, at = problem["advance_to"], problem["receiver_position"]
    if to != needed:
        raise Refused(f"--to must be exactly {needed}, the position before the oldest event {link.sender} still "
                      f"retains ({problem['oldest_retained']}); it was {to}")
    position, swap, close = _receiver_ops(link, env)
    try:
        current = await position()
        if current != at:
            raise Refused(f"{link.receiver}'s position is {current}, not the {at} {link.sender} reported: "
                          "the situation changed; run `ticketflow status` and start again")
        plan = (f"{link.receiver}'s position for stream '{link.stream}': {at} -> {to}, skipping events "
                f"{at + 1}..{to} ({to - at} events) that {link.sender} no longer has")
        if not confirm:
            raise Refused(f"would move {plan}. Nothing changed. Those events will never reach {link.receiver}: "
                          "reconcile them first (e.g. from a backup of the sender), then run again with --confirm")
        if not await swap(at, to):
            raise Refused(f"{link.receiver}'s position moved while this ran; nothing changed; start again")
    finally:
        await close()
    return f"moved {plan}. The relay resumes at its next attempt (within its backoff cap, a few seconds)."


def main(link_name: str, to: int, confirm: bool, settings: StackSettings) -> int:
    try:
        print(asyncio.run(advance(LINKS[link_name], to, confirm, daemon_env(settings))))
    except Refused as exc:
        print(f"ticketflow link advance: {exc}")
        return 1
    return 0

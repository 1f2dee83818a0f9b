"""Time on the wire: RFC 3339 in UTC, written one way by every daemon.

``rfc3339`` writes a datetime or an epoch as ``2026-11-24T20:00:00.000000Z``
(always microseconds, always ``Z``); a naive datetime is taken as UTC (MariaDB
DATETIME columns hold naive UTC). ``parse_rfc3339`` reads any RFC 3339 text
back into an aware UTC datetime; ``naive_utc`` turns one (or an epoch) into
what a MariaDB DATETIME column stores.
"""

from __future__ import annotations

from datetime import datetime, timezone


def rfc3339(value: datetime | float | None) -> str | None:
    """``value`` (aware, naive UTC, or seconds since the epoch) as RFC 3339 UTC; None stays None."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, timezone.utc)
    elif value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str) -> datetime:
    """RFC 3339 text (``Z`` or an offset) as an aware UTC datetime; ValueError if it is not one."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return parsed.astimezone(timezone.utc)


def naive_utc(value: datetime | str | float) -> datetime:
    """A datetime, RFC 3339 text or epoch as naive UTC, as MariaDB DATETIME columns store it."""
    if isinstance(value, str):
        value = parse_rfc3339(value)
    elif not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, timezone.utc)
    elif value.tzinfo is None:
        return value
    return value.astimezone(timezone.utc).replace(tzinfo=None)


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))

"""Field readers for JSON request bodies: each failure is a 422 naming the field."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from deploy.runtime.http import NotFound, Unprocessable

_CURRENCY = re.compile(r"^[A-Z]{3}$")


def invalid(field: str, message: str) -> Unprocessable:
    return Unprocessable(f"{field}: {message}", details={"field": field})


def obj(body: Any, field: str = "body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid(field, "must be a JSON object")
    return body


def text(body: dict[str, Any], field: str, *, min_len: int = 1, max_len: int = 200,
         required: bool = True, default: str = "") -> str:
    value = body.get(field)
    if value is None and not required:
        return default
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    value = storable(value.strip(), field)
    if not min_len <= len(value) <= max_len:
        raise invalid(field, f"must be {min_len} to {max_len} characters")
    return value


def storable(value: str, field: str) -> str:
    """``value`` if both databases can store it as text, else a 422 naming ``field``.

    JSON can carry NUL (``\\u0000``) and lone surrogates (``\\ud800``); PostgreSQL
    text refuses the first and UTF-8 cannot encode the second, so either would
    otherwise surface as a 500 from deep inside the store.
    """
    if "\x00" in value:
        raise invalid(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(field, "must be valid Unicode text (no lone surrogates)") from None
    return value


def integer(body: dict[str, Any], field: str, *, minimum: int, maximum: int) -> int:
    value = body.get(field)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid(field, "must be an integer")
    if not minimum <= value <= maximum:
        raise invalid(field, f"must be between {minimum} and {maximum}")
    return value


def uuid_field(body: dict[str, Any], field: str) -> uuid.UUID:
    value = body.get(field)
    if not isinstance(value, str):
        raise invalid(field, "must be a UUID string")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid(field, "must be a UUID string") from None


def uuid_list(body: dict[str, Any], field: str, *, max_items: int) -> list[uuid.UUID]:
    value = body.get(field)
    if not isinstance(value, list) or not value:
        raise invalid(field, "must be a non-empty list of UUIDs")
    if len(value) > max_items:
        raise invalid(field, f"at most {max_items} items")
    ids = [uuid_field({field: v}, field) for v in value]
    if len(set(ids)) != len(ids):
        raise invalid(field, "must not repeat an id")
    return ids


def currency(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not _CURRENCY.match(value):
        raise invalid(field, "must be an ISO 4217 code such as EUR")
    return value


def timestamp(body: dict[str, Any], field: str) -> datetime:
    value = body.get(field)
    if not isinstance(value, str):
        raise invalid(field, "must be an RFC 3339 timestamp")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(field, "must be an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise invalid(field, "must carry a time zone offset (e.g. Z)")
    try:
        parsed.astimezone(timezone.utc)  # the databases store UTC: year 1 at +01:00 has no UTC time
    except OverflowError:
        raise invalid(field, "is outside the years 1 to 9999 in UTC") from None
    return parsed


def path_uuid(raw: str, code: str, what: str) -> uuid.UUID:
    """An id from the URL: anything that is not a UUID cannot name an existing thing."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"no such {what}", code=code) from None


def query_int(query: Mapping[str, str], field: str, *, default: int, minimum: int, maximum: int) -> int:
    """An integer query parameter (``?limit=100``), ``default`` when absent; a 422 naming it otherwise."""
    raw = query.get(field)
    if raw is None:
        return default
    if not raw.isdigit() or not minimum <= int(raw) <= maximum:
        raise invalid(field, f"must be an integer between {minimum} and {maximum}")
    return int(raw)


def query_uuid(query: Mapping[str, str], field: str) -> uuid.UUID | None:
    """A UUID query parameter (a paging cursor), None when absent; a 422 naming it otherwise."""
    raw = query.get(field)
    return None if raw is None else uuid_field({field: raw}, field)

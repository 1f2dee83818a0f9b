"""Checks responses against an OpenAPI 3.1 document (the JSON Schema subset our specs use).

Written here rather than adding a dependency: the specs use type, const,
enum, pattern, required, properties, items, minimum, minLength/maxLength,
format (uuid, date-time) and $ref — about sixty lines of checking.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

_TYPES = {
    "object": dict, "array": list, "string": str, "boolean": bool,
    "integer": int, "number": (int, float), "null": type(None),
}


class SpecViolation(AssertionError):
    pass


def _resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def check(spec: dict[str, Any], schema: dict[str, Any], value: Any, where: str = "$") -> None:
    schema = _resolve(spec, schema)
    if "const" in schema and value != schema["const"]:
        raise SpecViolation(f"{where}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        raise SpecViolation(f"{where}: {value!r} not in {schema['enum']}")
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        ok = any(isinstance(value, _TYPES[k]) and not (k in ("integer", "number") and isinstance(value, bool))
                 for k in kinds)
        if not ok:
            raise SpecViolation(f"{where}: {value!r} is not of type {kind}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            raise SpecViolation(f"{where}: {value!r} does not match {schema['pattern']}")
        if not schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 1 << 30):
            raise SpecViolation(f"{where}: length {len(value)} out of bounds")
        fmt = schema.get("format")
        try:
            if fmt == "uuid":
                uuid.UUID(value)
            elif fmt == "date-time":
                if not re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$", value):
                    raise ValueError(value)
                datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise SpecViolation(f"{where}: {value!r} is not a {fmt}") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "minimum" in schema:
        if value < schema["minimum"]:
            raise SpecViolation(f"{where}: {value} < {schema['minimum']}")
    if isinstance(value, dict):
        for name in schema.get("required", []):
            if name not in value:
                raise SpecViolation(f"{where}: missing required {name!r}")
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                check(spec, sub, value[name], f"{where}.{name}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            raise SpecViolation(f"{where}: fewer than {schema['minItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                check(spec, schema["items"], item, f"{where}[{i}]")


def _match(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    for template, operations in spec["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise SpecViolation(f"{method} {path} is not in the OpenAPI document")


def declared_media_types(spec: dict[str, Any], method: str, path: str, status: int) -> set[str]:
    """The media types (without parameters) the document declares for this answer."""
    response = _match(spec, method, path.split("?")[0])["responses"].get(str(status), {})
    return {media.split(";")[0].strip() for media in response.get("content", {})}


def check_response(spec: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    operation = _match(spec, method, path.split("?")[0])
    response = operation["responses"].get(str(status))
    if response is None:
        raise SpecViolation(f"{method} {path}: status {status} is not documented")
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    if schema is not None:
        check(spec, schema, body, f"{method} {path} {status}")

"""Building blocks of the daemons' OpenAPI 3.1 documents.

Each daemon writes its own API by hand, as the contract; what every daemon
serves the same way (probes, /api/instance, the error envelope) is declared
here once, so the documents cannot disagree about it.
"""

from __future__ import annotations

import copy
from typing import Any

from deploy.runtime.auth import SERVICE, access
from deploy.runtime.http import VERSION

UUID = {"type": "string", "format": "uuid"}
TIME = {"type": "string", "format": "date-time"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    """A response in the error envelope; ``description`` names its codes."""
    return json_body(ref("Error"), description)


def path_uuid(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": UUID}


PUBLIC: dict[str, Any] = {"security": []}

SERVICE_PATHS: dict[str, Any] = {
    "/health": {"get": {"summary": "The process is alive", **PUBLIC, "responses": {
        "200": json_body({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
                         "alive")}}},
    "/ready": {"get": {"summary": "The daemon can do its job right now (its dependencies answer)", **PUBLIC,
                       "responses": {
        "200": json_body(ref("Readiness"), "ready"), "503": json_body(ref("Readiness"), "not ready")}}},
    "/openapi.json": {"get": {"summary": "This document", **PUBLIC, "responses": {
        "200": json_body({"type": "object"}, "OpenAPI 3.1 document")}}},
    "/api/instance": {"get": {"summary": "Which replica answered (for load-balancer drills)", **PUBLIC, "responses": {
        "200": json_body(ref("Instance"), "this replica")}}},
    # Who may scrape: the service role (the stack provisions a `prometheus` service token); metrics
    # show traffic, roles and positions an outsider has no business seeing. README, "Metrics".
    "/metrics": {"get": {"summary": "Prometheus metrics of this process (text exposition format 0.0.4)",
                         **access(SERVICE), "responses": {
        "200": {"description": "every metric of this process (README, \"Metrics\", lists the names)",
                "content": {"text/plain; version=0.0.4": {"schema": {"type": "string"}}}}}}},
}

COMMON_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string", "pattern": "^[A-Z][A-Z0-9_]*$"}, "message": {"type": "string"},
            "details": {"type": "object"}}}}},
    "Readiness": {"type": "object", "required": ["status", "checks"], "properties": {
        "status": {"enum": ["ready", "unavailable"]}, "checks": {"type": "object"}}},
    "Instance": {"type": "object", "required": ["instance", "pid", "version"], "properties": {
        "instance": {"type": "string"}, "pid": {"type": "integer"}, "version": {"type": "string"}}},
}


SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
               "description": "An EdDSA-signed JWT from billing's POST /api/sessions (people) or provisioned by "
                              "the stack (services). The roles an operation accepts are listed in its security "
                              "requirement; x-ticketflow-owner: true means a buyer reaches only resources it owns "
                              "(organizers those of their events) and anyone else gets 404."},
}
ACCESS_NOTE = (" Every operation declares who may call it in `security` (empty: public); roles are buyer, "
               "organizer, door and service.")


def document(title: str, description: str, paths: dict[str, Any], schemas: dict[str, Any] | None = None,
             rate_limited: bool = False) -> dict[str, Any]:
    """A whole OpenAPI 3.1 document: the daemon's ``paths`` and ``schemas`` beside the shared ones.

    ``rate_limited``: the daemon limits requests per client (TICKETFLOW_RATE_LIMIT_PER_SECOND),
    so every ``/api/`` operation may answer 429; the probes never do.
    """
    spec = copy.deepcopy({
        "openapi": "3.1.0",
        "info": {"title": title, "version": VERSION, "description": description + ACCESS_NOTE},
        "paths": {**SERVICE_PATHS, **paths},
        "components": {"schemas": {**COMMON_SCHEMAS, **(schemas or {})}, "securitySchemes": SECURITY_SCHEMES},
    })
    for path, operations in spec["paths"].items():  # what deploy/runtime/http.py answers for any route
        for method, operation in operations.items():
            operation["responses"].setdefault(
                "400", error("MALFORMED_HEADER: a header value is not UTF-8; MALFORMED_REQUEST: not valid HTTP"))
            if "requestBody" in operation or method in ("post", "put", "patch"):
                operation["responses"].setdefault(
                    "408", error("REQUEST_TIMEOUT: the body did not arrive within the request timeout"))
    for operations in spec["paths"].values():
        for operation in operations.values():
            if operation.get("security"):
                operation["responses"].setdefault(
                    "401", error("UNAUTHORIZED: no bearer token, or one that does not verify (expired, revoked, "
                                 "unknown key); see WWW-Authenticate"))
                operation["responses"].setdefault("403", error("FORBIDDEN: the token's role may not do this"))
    if rate_limited:
        for path, operations in spec["paths"].items():
            if path.startswith("/api/"):
                for operation in operations.values():
                    operation["responses"].setdefault(
                        "429", error("RATE_LIMITED: too many requests from this client; retry after Retry-After"))
    return spec

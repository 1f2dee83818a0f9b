"""The portal consumer's HTTP contract (``GET /openapi.json``): every operation, who may call it, its answers."""

from __future__ import annotations

from typing import Any

from deploy.runtime.auth import BUYER, OPERATOR, ORGANIZER, SERVICE, access
from deploy.runtime.openapi import TIME, document, error, json_body, ref
from deploy.runtime.web import openapi_paths

# The operators' console (README "The operators' console"): route -> (file in portal_consumer/web/, title).
PAGES = {"/ops": ("ops.html", "the operators' console: status, link lag, dead letters, drills")}
OPS = access(OPERATOR)
NOT_OPERATOR = {"401": error("UNAUTHORIZED: no or a bad bearer token"),
                "403": error("FORBIDDEN: the caller is not an operator")}
RABBIT_DOWN = error("DEPENDENCY_UNAVAILABLE: RabbitMQ does not answer; retry after Retry-After")
MESSAGE_ID = {"name": "message_id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "the dead letter's AMQP message id (sha256:... of its body when it has none)"}
NO_DEAD_LETTER = error("DEAD_LETTER_NOT_FOUND: no dead letter with this id (already requeued or discarded)")
DEAD_LETTER = {"type": "object", "required": ["id", "type", "routing_key", "reason", "size", "timestamp"],
               "properties": {"id": {"type": "string"}, "type": {"type": ["string", "null"]},
                              "routing_key": {"type": ["string", "null"]}, "reason": {"type": ["string", "null"]},
                              "size": {"type": "integer", "minimum": 0},
                              "timestamp": {"type": ["string", "null"]}}}
DRILL_RUN = {"type": "object", "required": ["id", "name", "started_at", "state", "exit_code", "has_report",
                                            "has_output"],
             "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "started_at": TIME,
                            "state": {"enum": ["running", "finished"]}, "exit_code": {"type": ["integer", "null"]},
                            "has_report": {"type": "boolean"}, "has_output": {"type": "boolean"}}}

NOTE = {"type": "object", "required": ["id", "user_id", "kind", "order_id", "payload", "created_at"],
        "properties": {"id": {"type": "string", "format": "uuid"}, "user_id": {"type": "string"},
                       "kind": {"enum": ["purchase_confirmed", "sale_failed_refunded", "refund_issued",
                                         "payment_declined"]},
                       "order_id": {"type": ["string", "null"]}, "payload": {"type": "object"},
                       "created_at": {"type": "string", "format": "date-time"},
                       "delivered_at": {"type": ["string", "null"]}}}
STUCK = {"type": "object", "required": ["message_id", "order_id", "type", "attempts", "age_seconds", "last_answer",
                                       "stuck_since"],
         "properties": {"message_id": {"type": "string"}, "order_id": {"type": ["string", "null"]},
                        "type": {"type": ["string", "null"]}, "attempts": {"type": "integer", "minimum": 1},
                        "age_seconds": {"type": "number", "minimum": 0}, "last_answer": {"type": "string"},
                        "stuck_since": {"type": "string", "format": "date-time"}}}
OPS_PATHS: dict[str, Any] = {
    **openapi_paths({path: title for path, (_, title) in PAGES.items()}),
    "/api/ops/status": {"get": {
        "summary": "`ticketflow status --json` as the console shows it: servers, daemons and replicas, cluster "
                   "roles (Patroni, Galera, RabbitMQ under HA), link lag, dead letters (read at most every 3 s)",
        **OPS, "responses": {
            "200": json_body({"type": "object", "required": ["read_at", "healthy", "report"], "properties": {
                "read_at": TIME, "healthy": {"type": "boolean", "description": "status exited 0"},
                "report": {"type": "object"}}}, "the report"),
            **NOT_OPERATOR,
            "503": error("DEPENDENCY_UNAVAILABLE: ticketflow status timed out or printed no report")}}},
    "/api/ops/lag": {"get": {
        "summary": "Each link's lag sampled every few seconds (the console's chart), oldest first; the "
                   "sampler runs while the console is in use",
        **OPS, "responses": {
            "200": json_body({"type": "object", "required": ["interval_seconds", "samples"], "properties": {
                "interval_seconds": {"type": "number"},
                "samples": {"type": "array", "items": {"type": "object", "required": ["at", "lag"], "properties": {
                    "at": TIME, "lag": {"type": "object", "additionalProperties": {"type": ["integer", "null"]},
                                        "description": "link -> events not yet acknowledged (null: unknown)"}}}}}},
                "the samples"), **NOT_OPERATOR}}},
    "/api/ops/dead-letters": {"get": {
        "summary": "The dead-letter queue: its depth and the first 200 messages (never their secrets)",
        **OPS, "responses": {
            "200": json_body({"type": "object", "required": ["count", "shown", "dead_letters"], "properties": {
                "count": {"type": "integer", "minimum": 0}, "shown": {"type": "integer", "minimum": 0},
                "dead_letters": {"type": "array", "items": ref("DeadLetter")}}}, "the dead letters"),
            **NOT_OPERATOR, "503": RABBIT_DOWN}}},
    "/api/ops/dead-letters/{message_id}": {"get": {
        "summary": "One dead letter: headers and body (credential-like fields redacted)",
        **OPS, "parameters": [MESSAGE_ID], "responses": {
            "200": json_body({"type": "object",
                              "required": [*DEAD_LETTER["required"], "headers", "body", "body_encoding",
                                           "content_type"],
                              "properties": {**DEAD_LETTER["properties"], "headers": {"type": "object"},
                                             "body_encoding": {"enum": ["json", "text", "base64"]},
                                             "content_type": {"type": ["string", "null"]}}}, "the message"),
            **NOT_OPERATOR, "404": NO_DEAD_LETTER, "503": RABBIT_DOWN}}},
    "/api/ops/dead-letters/{message_id}/requeue": {"post": {
        "summary": "Publish the dead letter to the portal's queue again (confirmed), then remove it; audited "
                   "in the log (dead_letter_requeued, who)",
        **OPS, "parameters": [MESSAGE_ID], "responses": {
            "200": json_body({"type": "object", "required": ["id", "outcome", "queue"], "properties": {
                "id": {"type": "string"}, "outcome": {"const": "requeued"}, "queue": {"type": "string"}}},
                "requeued"),
            **NOT_OPERATOR, "404": NO_DEAD_LETTER, "503": RABBIT_DOWN}}},
    "/api/ops/dead-letters/{message_id}/discard": {"post": {
        "summary": "Remove the dead letter for good; audited in the log (dead_letter_discarded, who)",
        **OPS, "parameters": [MESSAGE_ID], "responses": {
            "200": json_body({"type": "object", "required": ["id", "outcome"], "properties": {
                "id": {"type": "string"}, "outcome": {"const": "discarded"}}}, "discarded"),
            **NOT_OPERATOR, "404": NO_DEAD_LETTER, "503": RABBIT_DOWN}}},
    "/api/ops/drills": {"get": {
        "summary": "The drills the console runs, the one running, and the recent runs (newest first)",
        **OPS, "responses": {
            "200": json_body({"type": "object", "required": ["drills", "topology", "running", "recent"],
                              "properties": {"drills": {"type": "array", "items": {"type": "string"}},
                                             "topology": {"enum": ["local", "ha"]},
                                             "running": {"type": ["string", "null"]},
                                             "recent": {"type": "array", "items": ref("DrillRun")}}},
                             "drills"), **NOT_OPERATOR}}},
    "/api/ops/drills/{run_id}": {"get": {
        "summary": "One drill run: its JSON report (null when it wrote none, e.g. refused) and its output",
        **OPS, "parameters": [{"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": json_body({"type": "object", "required": [*DRILL_RUN["required"], "report", "output"],
                              "properties": {**DRILL_RUN["properties"], "report": {"type": ["object", "null"]},
                                             "output": {"type": "string"}}}, "the run"),
            **NOT_OPERATOR, "404": error("DRILL_NOT_FOUND")}}},
    "/api/ops/drills/{name}/run": {"post": {
        "summary": "Run `ticketflow drill NAME` against the HA stack and stream its output",
        "description": "text/event-stream: `started` {id, name, started_at}, `line` {text} per line of output, "
                       "`done` (a DrillRun) with the exit code (0 passed, 1 an anomaly, 2 refused: e.g. the stack "
                       "is not HA). One drill at a time. The drill goes on if the stream is closed.",
        **OPS, "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "the drill's output", "content": {"text/event-stream": {
                "schema": {"type": "string"}}}},
            **NOT_OPERATOR, "404": error("DRILL_NOT_FOUND: not a drill the console runs"),
            "409": error("DRILL_RUNNING: a drill is already running")}}},
}


SPEC = document(
    "TicketFlow portal consumer", "Notifications produced when sales are finalized, failed or refunded.",
    {"/api/notifications": {"get": {
        "summary": "Your notifications, newest first (a service may name any user_id)",
        **access(BUYER, ORGANIZER, SERVICE, owner=True),
        "parameters": [{"name": "user_id", "in": "query", "required": False, "schema": {"type": "string"},
                        "description": "defaults to the caller; another user's id finds nothing"}],
        "responses": {
            "200": json_body({"type": "object", "required": ["notifications"],
                              "properties": {"notifications": {"type": "array", "items": ref("Notification")}}},
                             "newest first"),
            "404": error("USER_NOT_FOUND: user_id names someone else"),
            "422": error("VALIDATION_FAILED: user_id is not text a database can store"),
            "503": error("DEPENDENCY_UNAVAILABLE: the database is unreachable; retry after Retry-After")}}},
     "/api/stuck": {"get": {
         "summary": "Messages being retried because a peer is down or answers unexpectedly (they stay in the "
                    "queue, unacked; none is dead-lettered for it), oldest first",
         **access(SERVICE),
         "responses": {"200": json_body({"type": "object", "required": ["stuck"], "properties": {
             "stuck": {"type": "array", "items": ref("StuckMessage")}}}, "the stuck messages")}}},
     **OPS_PATHS},
    {"Notification": NOTE, "StuckMessage": STUCK, "DeadLetter": DEAD_LETTER, "DrillRun": DRILL_RUN})

"""structlog set up once for every daemon: JSON lines on stdout.

Keys used everywhere: ``service``, ``event``, ``level``, ``ts`` and, where
they apply, ``stream``, ``seq``, ``peer``, ``event_id``, ``order_id``, ``duration_ms``, and
``correlation_id`` (bound per request and per event: deploy/runtime/correlation.py).
"""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


def configure(service: str, level: str = "info") -> None:
    """Route structlog (and stdlib logging) to JSON lines tagged with ``service``."""
    global _configured
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries log through the stdlib; keep their warnings, drop their chatter.
    logging.basicConfig(stream=sys.stdout, level=max(numeric, logging.WARNING), format="%(message)s")
    _configured = True


def get_logger(**initial: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(**initial)

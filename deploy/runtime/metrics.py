"""Prometheus metrics of every daemon: ``GET /metrics`` in the text format (README, "Metrics").

One registry per process (:data:`REGISTRY`), every metric object defined here, once, by
concern. Hot paths only increment counters; what lives in memory anyway (link positions,
relay roles, pool use) is read when Prometheus scrapes, by :class:`StateCollector`.

- HTTP: :func:`middleware` (wired by ``make_app``) counts each request and observes its
  latency by route TEMPLATE (``/api/orders/{order_id}/pay``, never the raw path: an unknown
  path is the one label value ``unmatched``), method (unknown methods are ``OTHER``) and status.
- Outcomes: holds (reservation), payments (billing), sales finalized (portal), each label a
  bounded set the daemon names (an outcome or error code, never an id).
- Links and relays: positions on both ends of each stream and the lag between them.
- RabbitMQ: publishes, confirms, nacks (bridge); consumption and dead letters (portal).
- Databases: pool size, connections in use, maximum.
- Restarts: the supervisor passes ``TICKETFLOW_RESTARTS`` to a daemon it restarts.

Who may scrape: the ``service`` role (``SERVICE_PATHS`` in deploy/runtime/openapi.py
declares ``/metrics`` for every daemon); the stack provisions a ``prometheus`` service token.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

disable_created_metrics()  # no *_created series: a restart shows as a counter reset, as Prometheus expects
REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
PlatformCollector(registry=REGISTRY)  # python_info

# --- HTTP ---------------------------------------------------------------------------------------
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_REQUESTS = Counter("ticketflow_http_requests", "HTTP requests answered, by route template, method and status",
                        ["route", "method", "status"], registry=REGISTRY)
HTTP_DURATION = Histogram("ticketflow_http_request_duration_seconds",
                          "Time from the request reaching the app to its response, by route template, method and "
                          "status", ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=REGISTRY)
UNMATCHED = "unmatched"  # the route label of every path no route serves
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# --- outcomes -----------------------------------------------------------------------------------
HOLDS = Counter("ticketflow_holds", "Seat hold requests by outcome (held, seat_unavailable, ...)", ["outcome"],
                registry=REGISTRY)
PAYMENTS = Counter("ticketflow_payments", "Payment requests answered, by outcome (succeeded, or the error code)",
                   ["outcome"], registry=REGISTRY)
SALES = Counter("ticketflow_sales_finalized", "Payment events the portal finalized, by outcome", ["outcome"],
                registry=REGISTRY)

# --- RabbitMQ -----------------------------------------------------------------------------------
AMQP_PUBLISHED = Counter("ticketflow_amqp_published", "Messages published to RabbitMQ (each attempt)", ["exchange"],
                         registry=REGISTRY)
AMQP_CONFIRMED = Counter("ticketflow_amqp_confirmed", "Published messages RabbitMQ confirmed", ["exchange"],
                         registry=REGISTRY)
AMQP_NACKED = Counter("ticketflow_amqp_nacked",
                      "Published messages in a batch RabbitMQ nacked or left unconfirmed (published again)",
                      ["exchange"], registry=REGISTRY)
AMQP_CONSUMED = Counter("ticketflow_amqp_consumed",
                        "Messages consumed, by how each delivery ended (acked, dead_lettered, requeued)",
                        ["outcome"], registry=REGISTRY)
DEAD_LETTERS = Counter("ticketflow_dead_letters", "Messages this process dead-lettered", registry=REGISTRY)


def bounded(label: object) -> str:
    """A label value from elsewhere (an outcome or code) kept to short label-like text, else ``other``."""
    if isinstance(label, str) and label.replace("_", "").isalnum() and label.isascii() and len(label) <= 64:
        return label
    return "other"


# --- state read at scrape time ------------------------------------------------------------------


class StateCollector(Collector):
    """Link positions, relay roles, pool use and restarts, read from live objects when scraped.

    Objects are held weakly (tests build and drop daemons in one process). Where several
    objects report the same stream (replicas in one process), the highest position wins.
    """

    def __init__(self) -> None:
        self.relays: weakref.WeakSet[Any] = weakref.WeakSet()
        self.receivers: weakref.WeakSet[Any] = weakref.WeakSet()
        self.pools: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return iter(())  # the families depend on what is watched; nothing to check at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily("ticketflow_relay_active", "1 while this process's relay of the stream is the "
                                   "active one (holds the lock or lease), 0 on a standby", labels=["stream"])
        sent = GaugeMetricFamily("ticketflow_link_sent_position", "Highest sequence the active relay sent",
                                 labels=["stream"])
        acked = GaugeMetricFamily("ticketflow_link_acked_position",
                                  "Highest sequence the receiver acknowledged to the active relay", labels=["stream"])
        received = GaugeMetricFamily("ticketflow_link_received_position", "Highest sequence this receiver got",
                                     labels=["stream"])
        applied = GaugeMetricFamily("ticketflow_link_applied_position",
                                    "Highest sequence this receiver durably applied (and acked)", labels=["stream"])
        lag = GaugeMetricFamily("ticketflow_link_lag_events", "Events sent but not yet acknowledged (end=sender) or "
                                "received but not yet applied (end=receiver)", labels=["stream", "end"])
        roles: dict[str, int] = {}
        senders: dict[str, tuple[int, int]] = {}
        for relay in list(self.relays):
            roles[relay.stream] = max(roles.get(relay.stream, 0), int(bool(relay.active)))
            sender = relay.sender
            if relay.active and sender is not None:
                s, a = max(sender.sent, sender.acked), sender.acked
                old = senders.get(relay.stream, (0, 0))
                senders[relay.stream] = (max(old[0], s), max(old[1], a))
        receivers: dict[str, tuple[int, int]] = {}
        for receiver in list(self.receivers):
            for stream, (r, a) in receiver.positions().items():
                old = receivers.get(stream, (0, 0))
                receivers[stream] = (max(old[0], r), max(old[1], a))
        for stream, value in sorted(roles.items()):
            active.add_metric([stream], value)
        for stream, (s, a) in sorted(senders.items()):
            sent.add_metric([stream], s)
            acked.add_metric([stream], a)
            lag.add_metric([stream, "sender"], s - a)
        for stream, (r, a) in sorted(receivers.items()):
            received.add_metric([stream], r)
            applied.add_metric([stream], a)
            lag.add_metric([stream, "receiver"], r - a)
        yield from (active, sent, acked, received, applied, lag)

        size = GaugeMetricFamily("ticketflow_db_pool_connections", "Connections the database pool holds open",
                                 labels=["database"])
        in_use = GaugeMetricFamily("ticketflow_db_pool_in_use", "Pool connections lent out right now",
                                   labels=["database"])
        limit = GaugeMetricFamily("ticketflow_db_pool_max", "The most connections the pool may open",
                                  labels=["database"])
        for name, db in sorted(self.pools.items()):
            opened, lent, most = db.pool_stats()
            size.add_metric([name], opened)
            in_use.add_metric([name], lent)
            limit.add_metric([name], most)
        yield from (size, in_use, limit)

        restarts = GaugeMetricFamily("ticketflow_process_restarts",
                                     "How many times the supervisor restarted this daemon replica in this run "
                                     "(TICKETFLOW_RESTARTS)")
        restarts.add_metric([], restart_count())
        yield restarts


STATE = StateCollector()
REGISTRY.register(STATE)


def restart_count() -> int:
    try:
        return max(0, int(os.environ.get("TICKETFLOW_RESTARTS", "0")))
    except ValueError:
        return 0


def watch_relay(relay: Any) -> None:
    """An outbox relay (``.stream``, ``.active``, ``.sender`` with ``.sent``/``.acked``)."""
    STATE.relays.add(relay)


def watch_receiver(receiver: Any) -> None:
    """A link receiver (``.positions()``: stream -> (received, applied))."""
    STATE.receivers.add(receiver)


def watch_pool(database: str, db: Any) -> None:
    """A database wrapper with ``pool_stats()`` -> (open, in use, max); ``database``: postgresql, mariadb."""
    STATE.pools[database] = db


# --- HTTP wiring --------------------------------------------------------------------------------


def route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # bounded: route templates x methods x statuses


@web.middleware
async def middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    """Count and time every request; outermost, so it sees the status the client gets."""
    started = time.perf_counter()
    status: int | None = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects and the like pass the error envelope untouched
        status = exc.status
        raise
    except asyncio.CancelledError:  # the client went away: no answer to count
        status = None
        raise
    finally:
        if status is not None:
            key = (route_label(request), request.method if request.method in METHODS else "OTHER", status)
            children = _http_children.get(key)
            if children is None:  # labels() validates and locks: once per label set, not per request
                labels = (*key[:2], str(status))
                children = _http_children[key] = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
            children[0].inc()
            children[1].observe(time.perf_counter() - started)


async def handler(_: web.Request) -> web.Response:
    """``GET /metrics``: the whole registry in the Prometheus text format."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def exported_names() -> set[str]:
    """Every metric family name this process exports (without the _total/_bucket/... suffixes)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())}

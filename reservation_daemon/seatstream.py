"""Live seat status for the buyer's pages: ``GET /api/events/{id}/seat-stream`` (server-sent events).

Where the changes come from. Every change of a seat's status is already a row of the
reservation stream (reservation.created: held; .confirmed: sold; .cancelled/.expired:
available), numbered gap-free in commit order by the one active relay (README, "Order of
the reservation stream"). That numbered stream *is* the change log; nothing new is written
by a hold:

- the change signal is a NOTIFY on ``tf_stream_numbered`` that ``tf_sequence_outbox`` sends
  in the relay's numbering transaction: one per numbering batch (the relay is woken at most
  every 2 ms), never one per hold, so the NOTIFY hot spot issue 13 removed stays removed
  (holds run exactly the statements they ran before);
- each daemon process has ONE reader (:class:`SeatFeed`): a LISTEN session of its own,
  woken by that NOTIFY (and by a short fallback poll in case a notification is lost, or
  the listening session is being re-established), reads the rows numbered since its
  position with one indexed range scan, and fans each change out to every open stream of
  that process for that event. Viewers cost no database work of their own;
- replicas: every replica's reader LISTENs on the same database, so a hold taken through
  replica A reaches viewers on replica B as soon as it is numbered (whichever replica's
  relay numbers it). Rows are numbered a few ms after the hold commits (the relay's local
  wake, or the coalesced cross-replica NOTIFY, then the numbering transaction);
- resume: the SSE ``id`` of each message is the stream's seq, so a browser's automatic
  reconnect (``Last-Event-ID``) replays exactly the missed changes of that event from the
  outbox (kept ``TICKETFLOW_OUTBOX_RETENTION_HOURS``); too far back (pruned, or more than
  :data:`REPLAY_MAX` events) and the stream says ``reset``: reload the seat map;
- memory per viewer is bounded: a queue of at most ``TICKETFLOW_SEAT_STREAM_QUEUE``
  encoded messages (shared ``bytes``, one encoding per change whatever the viewer count); a
  viewer that falls that far behind is sent ``dropped`` (reason ``slow_consumer``) and
  closed; its browser reconnects and resumes by ``Last-Event-ID``. A write that does not
  complete within the heartbeat interval closes the stream too;
- a ``: heartbeat`` comment every ``TICKETFLOW_SEAT_STREAM_HEARTBEAT_SECONDS`` keeps proxies
  (HAProxy's ``timeout server``) from cutting a quiet stream and finds dead clients.

Who may open it: anyone, like ``GET /api/events/{id}/seats`` (a seat's status is public; a
message carries seat ids and statuses only, never who holds them). At most
``TICKETFLOW_SEAT_STREAM_MAX_VIEWERS`` per process (503 ``STREAM_CAPACITY`` beyond), at most
``TICKETFLOW_SEAT_STREAM_PER_ADDRESS`` of them from one client address (429 ``TOO_MANY_STREAMS``).

Messages (``event:`` names): ``ready`` ``{"position"}`` first on a fresh stream; ``seats``
``{"event_id", "seats": [{"id", "status"}]}`` per change; ``reset`` ``{"position"}``;
``dropped`` ``{"reason"}``.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from deploy.runtime.aio import wait_event
from deploy.runtime.backoff import Backoff
from deploy.runtime.http import ApiError, DependencyUnavailable, client_address
from reservation_daemon.store import ReservationStore

log = structlog.get_logger("reservation.seatstream")

CHANNEL = "tf_stream_numbered"  # NOTIFY sent by tf_sequence_outbox when it numbered rows
READ_BATCH = 2000  # rows per read of the reader
REPLAY_MAX = 1_000  # events a resume may replay (an anonymous request reads at most this many rows); further: reset
MIN_READ_INTERVAL = 0.01  # a burst of notifications costs at most one read per 10 ms
STATUS_OF = {"reservation.created": "held", "reservation.confirmed": "sold",
             "reservation.cancelled": "available", "reservation.expired": "available"}
END = b""  # a viewer's queue sentinel: the stream ends


class StreamCapacity(ApiError):
    status, code = 503, "STREAM_CAPACITY"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


class TooManyStreams(ApiError):
    """One client address holds its share of the open streams: a stranger cannot take them all."""

    status, code = 429, "TOO_MANY_STREAMS"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "5"})


def seat_changes(kind: str, data: dict[str, Any]) -> list[dict[str, str]] | None:
    """The seats an event of the reservation stream moved, with their new status (None: moves none)."""
    status = STATUS_OF.get(kind)
    if status is None:
        return None
    ids = [s["id"] for s in data.get("seats", ())] if kind == "reservation.created" else data.get("seat_ids", ())
    return [{"id": str(i), "status": status} for i in ids]


def frame(name: str, data: Any, seq: int | None = None) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def change_frame(seq: int, kind: str, data: dict[str, Any]) -> bytes | None:
    seats = seat_changes(kind, data)
    if seats is None:
        return None
    return frame("seats", {"event_id": data.get("event_id"), "seats": seats}, seq)


class Viewer:
    __slots__ = ("event_id", "after", "queue", "start", "address")

    def __init__(self, event_id: str, after: int, limit: int, address: str = "") -> None:
        self.event_id = event_id
        self.address = address  # whose share of the open streams it takes
        self.start = after  # the feed's position when this viewer joined
        self.after = after  # messages with seq <= after are not for this viewer (already sent)
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(limit + 2)  # + the dropped notice and END


class SeatFeed:
    """This process's one reader of seat changes, and the open streams it fans out to."""

    def __init__(self, dsn: str, store: ReservationStore, *, poll: float, queue_limit: int, max_viewers: int,
                 heartbeat: float, per_address: int = 32) -> None:
        self.dsn = dsn
        self.store = store
        self.poll = poll
        self.queue_limit = queue_limit
        self.max_viewers = max_viewers
        self.per_address = per_address
        self.by_address: dict[str, int] = {}
        self.heartbeat = heartbeat
        self.position: int | None = None  # last seq read (None until the reader has started)
        self.viewers: dict[str, set[Viewer]] = {}
        self.count = 0
        self.dropped = 0  # viewers dropped as slow consumers, for tests and status
        self.reads = 0
        self._wake = asyncio.Event()
        self._closed = False

    # --- the reader ------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: LISTEN, and read what was numbered on each wake-up or poll."""
        backoff = Backoff(base=0.2, cap=5.0)
        failures = 0
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
                if self.position is None:
                    self.position = await self.store.numbered_head()
                self._wake.set()  # read whatever was numbered while not listening
                while not conn.is_closed():
                    await wait_event(self._wake, self.poll)
                    self._wake.clear()
                    await self.read()
                    if failures:  # back only once a read went through: no reset on a half-success
                        log.info("seat_feed_listening_again", failures=failures)
                        failures = 0
                        backoff.reset()
                    await asyncio.sleep(MIN_READ_INTERVAL)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                if math.log10(failures).is_integer():  # one line per outage, not one per attempt
                    log.warning("seat_feed_unavailable", reason=repr(exc), failures=failures)
                await asyncio.sleep(backoff.next_delay())
            finally:
                if conn is not None:
                    conn.terminate()

    async def read(self) -> None:
        """Fan out what was numbered since :attr:`position` (only the head moves when nobody watches)."""
        assert self.position is not None
        if not self.viewers:
            return  # nobody watches: no query at all (the first viewer moves the position to the head)
        self.reads += 1
        while True:
            rows = await self.store.numbered_after(self.position, READ_BATCH)
            for row in rows:
                self._publish(row["seq"], row["type"], row["data"])
            if rows:
                self.position = rows[-1]["seq"]
            if len(rows) < READ_BATCH:
                return

    def _publish(self, seq: int, kind: str, data: dict[str, Any]) -> None:
        viewers = self.viewers.get(str(data.get("event_id")))
        if not viewers:
            return
        message = change_frame(seq, kind, data)
        if message is None:
            return
        for viewer in list(viewers):
            if seq > viewer.after:
                self._offer(viewer, message)

    def _offer(self, viewer: Viewer, message: bytes) -> None:
        if viewer.queue.qsize() < self.queue_limit:
            viewer.queue.put_nowait(message)
            return
        # A slow consumer: drop it (its browser reconnects and resumes by Last-Event-ID).
        self.dropped += 1
        log.info("seat_stream_viewer_dropped", reason="slow_consumer", queued=viewer.queue.qsize())
        self.unsubscribe(viewer)
        while not viewer.queue.empty():
            viewer.queue.get_nowait()
        viewer.queue.put_nowait(frame("dropped", {"reason": "slow_consumer"}))
        viewer.queue.put_nowait(END)

    # --- viewers ---------------------------------------------------------------------

    def subscribe(self, event_id: str, last_id: int | None, address: str = "") -> Viewer:
        if self._closed or self.position is None:
            raise DependencyUnavailable("live seat updates are starting; retry shortly", retry_after=1)
        if self.count >= self.max_viewers:
            raise StreamCapacity(f"this server already streams to {self.max_viewers} viewers; retry shortly")
        if self.by_address.get(address, 0) >= self.per_address:
            raise TooManyStreams(f"{self.per_address} seat streams are already open from your address")
        viewer = Viewer(event_id, self.position, self.queue_limit, address)
        self.by_address[address] = self.by_address.get(address, 0) + 1
        if last_id is not None and last_id > viewer.after:
            viewer.after = last_id  # the browser saw further (another replica's reader was ahead)
        self.viewers.setdefault(event_id, set()).add(viewer)
        self.count += 1
        return viewer

    def unsubscribe(self, viewer: Viewer) -> None:
        viewers = self.viewers.get(viewer.event_id)
        if viewers is not None and viewer in viewers:
            viewers.discard(viewer)
            self.count -= 1
            left = self.by_address.get(viewer.address, 1) - 1
            if left > 0:
                self.by_address[viewer.address] = left
            else:
                self.by_address.pop(viewer.address, None)
            if not viewers:
                del self.viewers[viewer.event_id]

    async def replay(self, viewer: Viewer, last_id: int) -> list[bytes] | None:
        """The missed changes of the viewer's event in (last_id, start]; None if they are gone or too many."""
        if viewer.start - last_id > REPLAY_MAX:
            return None
        rows = await self.store.numbered_of_event(viewer.event_id, last_id, viewer.start)
        if rows is None:
            return None
        return [m for m in (change_frame(r["seq"], r["type"], r["data"]) for r in rows) if m is not None]

    async def close(self) -> None:
        """End every open stream (shutdown: the HTTP server then finishes at once)."""
        self._closed = True
        for viewers in list(self.viewers.values()):
            for viewer in list(viewers):
                self.unsubscribe(viewer)
                viewer.queue.put_nowait(END)

    # --- the HTTP side ---------------------------------------------------------------

    async def serve(self, request: web.Request, event_id: str) -> web.StreamResponse:
        last_id = _last_event_id(request)
        if self.count == 0 and self.position is not None:
            head = await self.store.numbered_head()  # unread while nobody watched: skip to the head
            if self.count == 0:  # nobody joined meanwhile (a viewer keeps the position it joined at)
                self.position = max(self.position, head)
        viewer = self.subscribe(event_id, last_id, client_address(request))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        try:
            await response.prepare(request)
            opening = [b"retry: 1000\n\n"]
            if last_id is None:
                opening.append(frame("ready", {"position": viewer.start}, viewer.start))
            elif last_id < viewer.start:
                missed = await self.replay(viewer, last_id)
                opening += missed if missed is not None else [frame("reset", {"position": viewer.start},
                                                                    viewer.start)]
            await response.write(b"".join(opening))
            while True:
                try:
                    message = await asyncio.wait_for(viewer.queue.get(), self.heartbeat)
                except TimeoutError:
                    message = b": heartbeat\n\n"
                if message == END:
                    break
                async with asyncio.timeout(self.heartbeat):  # a client that stopped reading is closed
                    await response.write(message)
            return response
        except (ConnectionResetError, TimeoutError):
            return response
        finally:
            self.unsubscribe(viewer)


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        return None  # not one of ours: start afresh
    return value if value >= 0 else None

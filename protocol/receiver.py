"""The accepting end of a link: authenticates senders, applies batches, acks after commit.

Per stream, the receiver keeps at most one live connection (a newer one
replaces an older, which is most likely a half-dead peer) and never runs two
``apply`` calls for one stream at once. The welcome position is read from
the handler's durable store on every connection, never from memory.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from typing import Protocol

import structlog

from protocol.errors import PERMANENT, ErrorCode, ProtocolError, RemoteError
from protocol.link import READ_LIMIT, Connection, LinkSettings, run_until_first_failure
from protocol.messages import Event
from protocol.session import Authenticated, EventsReceived, PendingLimit, ReceiverSession, State

log = structlog.get_logger("protocol.receiver")

DEFAULT_MAX_BATCH = 1000


class StreamHandler(Protocol):
    async def position(self) -> int:
        """The highest seq durably applied for this stream (0 if none)."""

    async def apply(self, events: Sequence[Event]) -> None:
        """Apply ``events`` (consecutive seqs) and record the new position in ONE commit.

        Return only after the commit is durable; raise if it did not happen.
        """


class Receiver:
    def __init__(
        self,
        handlers: Mapping[str, StreamHandler],
        settings: LinkSettings,
        host: str = "127.0.0.1",
        port: int = 0,
        max_batch: int = DEFAULT_MAX_BATCH,
        reuse_port: bool = False,
    ) -> None:
        self.handlers = handlers
        self.reuse_port = reuse_port
        self.settings = settings
        self.host = host
        self.port = port
        self.max_batch = max_batch
        self._server: asyncio.AbstractServer | None = None
        self._active: dict[str, asyncio.Task] = {}
        self._connections: set[Connection] = set()
        self.accepted = 0  # completed handshakes, for tests and status
        # Peers that have not proven the secret yet: capped, in all and per address.
        self.pending = PendingLimit(settings.max_pending, settings.max_pending_per_address)

    async def start(self) -> None:
        tls = {"ssl": self.settings.ssl, "ssl_handshake_timeout": self.settings.handshake_timeout} \
            if self.settings.ssl is not None else {}
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=READ_LIMIT, reuse_port=self.reuse_port, **tls
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("receiver_listening", port=self.port, streams=sorted(self.handlers))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._connections):
            await conn.close(ProtocolError(ErrorCode.SHUTTING_DOWN, "receiver stopping"))
        tasks = list(self._active.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def positions(self) -> dict[str, tuple[int, int]]:
        """stream -> (highest seq received, highest seq applied and acked) over the streaming
        connections (the newest one is ahead of one it replaced); read by metrics, no I/O."""
        found: dict[str, tuple[int, int]] = {}
        for conn in list(self._connections):
            session = conn.session
            if isinstance(session, ReceiverSession) and session.state is State.STREAMING and session.stream:
                received, applied = found.get(session.stream, (0, 0))
                found[session.stream] = (max(received, session.last_received), max(applied, session.acked))
        return found

    def drop_connections(self) -> None:
        """Abort every live connection at once, as a crash would (used by tests and drills)."""
        for conn in list(self._connections):
            conn.writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        s = self.settings
        session = ReceiverSession(self.handlers.keys(), s.secret, s.node, s.max_frame_size, now=time.monotonic(),
                                  heartbeat_timeout=s.heartbeat_timeout, handshake_timeout=s.handshake_timeout)
        conn = Connection(session, reader, writer)
        if not self.pending.admit(conn.address):
            # Over the cap of unauthenticated connections: closed before anything is read or kept.
            writer.transport.abort()
            if math.log10(self.pending.refused).is_integer():
                log.warning("link_pending_limit", peer=conn.peer, refused=self.pending.refused,
                            pending=self.pending.count, max_pending=s.max_pending,
                            max_pending_per_address=s.max_pending_per_address)
            return
        pending = True
        self._connections.add(conn)
        error: ProtocolError | None = None
        stream = None
        try:
            try:
                auth = await self._handshake(conn)  # the session times it out (HEARTBEAT_TIMEOUT)
            finally:
                self.pending.release(conn.address)
                pending = False
            stream = auth.stream
            await self._take_over(stream)
            handler = self.handlers[stream]
            position = await handler.position()
            session.welcome(position, time.monotonic())
            conn.flush()
            self.accepted += 1
            log.info("link_accepted", stream=stream, peer=conn.peer, sender=auth.node, position=position)
            arrived = asyncio.Event()
            await run_until_first_failure(self._read_events(conn, arrived), self._apply_batches(conn, handler, arrived))
        except ProtocolError as exc:
            error = exc
            log.warning("link_rejected", stream=stream, peer=conn.peer, code=exc.code.value, reason=exc.message)
        except RemoteError as exc:
            (log.error if exc.code in PERMANENT else log.info)(
                "link_closed_by_peer", stream=stream, peer=conn.peer, code=exc.code, reason=exc.message)
        except (OSError, asyncio.IncompleteReadError) as exc:
            log.info("link_lost", stream=stream, peer=conn.peer, reason=repr(exc))
        except asyncio.CancelledError:
            error = ProtocolError(ErrorCode.REPLACED, "a newer connection took over this stream")
        except Exception:
            # An apply that raised: nothing after the last ack counts; the sender resends.
            error = ProtocolError(ErrorCode.APPLY_FAILED, "could not commit the batch")
            log.exception("apply_failed", stream=stream, peer=conn.peer)
        finally:
            if pending:
                self.pending.release(conn.address)
            self._connections.discard(conn)
            if stream is not None and self._active.get(stream) is asyncio.current_task():
                del self._active[stream]
            await conn.close(error)

    async def _handshake(self, conn: Connection) -> Authenticated:
        while True:
            for event in await conn.read():
                if isinstance(event, Authenticated):
                    return event

    async def _take_over(self, stream: str) -> None:
        """Make this connection the only one applying ``stream``."""
        previous = self._active.get(stream)
        me = asyncio.current_task()
        assert me is not None
        self._active[stream] = me
        if previous is not None and not previous.done():
            previous.cancel()
            # Wait until its apply is finished or rolled back before reading the position.
            await asyncio.gather(previous, return_exceptions=True)

    async def _read_events(self, conn: Connection, arrived: asyncio.Event) -> None:
        while True:
            if any(isinstance(event, EventsReceived) for event in await conn.read()):
                arrived.set()

    async def _apply_batches(self, conn: Connection, handler: StreamHandler, arrived: asyncio.Event) -> None:
        session = conn.session
        assert isinstance(session, ReceiverSession)
        while True:
            await arrived.wait()
            arrived.clear()
            # Everything that arrived while the last batch was committing forms the next batch;
            # the session hands it out and acks it as soon as it is committed.
            while batch := session.next_batch(self.max_batch):
                await handler.apply(batch)
                session.batch_applied(time.monotonic())
                conn.flush()

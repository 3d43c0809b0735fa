"""One client connection of the ASGI worker: bytes in through the shared
request reader, requests out to :class:`~.asgi_cycle.Cycle` objects, and
the connection's own life (keep-alive, deadlines, lingering close, drain).

The connection is in one :class:`Mode` at a time::

    FRESH --bytes--> HEAD --request--> EXCHANGE --response complete--> IDLE --bytes--> HEAD ...
                                          |  \\--body left unread--> DISCARD --end of body--> IDLE
                                          \\--upgrade--> WEBSOCKET
    any --refused with an error--> LINGER --> CLOSED

Flow control, on reading: the transport reads exactly when there is room
for what it reads, and :meth:`HTTPProtocol._sync_reading` is the one place
that pauses or resumes it:

* waiting for a head, discarding a body, lingering: always (each bounded by
  its own limit or deadline);
* while the app receives the body: while less than ``BODY_HIGH_WATER`` of
  it waits for the app;
* once the request is read: while less than ``BODY_HIGH_WATER`` of the
  next (pipelined) request is buffered -- reading on lets a client's
  disconnect be seen while the app streams.

Bytes already read are parsed whenever there is room again
(:meth:`HTTPProtocol._process`, after every read and every body message the
app takes), so a body read ahead of the app can never sit in the reader
unparsed while the transport waits for bytes the client has already sent.
"""

from __future__ import annotations

import asyncio
import enum
import select
import sys
from typing import TYPE_CHECKING, Any

from ..http.asgi import ClientDisconnected, http_scope
from ..http.proxy import NOT_FORWARDED
from ..http.request import (NEED_DATA, ConnectionClosed, EndOfMessage, HTTPError, Request,
                            RequestReader)
from ..http.response import error_response
from .asgi_cycle import Body, Cycle, Phase
from .websocket import upgrade_to_websocket

if TYPE_CHECKING:  # pragma: no cover
    from .asgi import ASGIWorker

__all__ = ["HTTPProtocol", "Mode", "BODY_HIGH_WATER"]

#: Request body read ahead of the app (and pipelined bytes buffered behind
#: a request) before reading from the client pauses.
BODY_HIGH_WATER = 256 * 1024
# On graceful stop, how long a new connection may take to send its first
# request before it is closed.
FIRST_REQUEST_GRACE = 2.0
# How long a connection refused with an error is drained before it closes.
_LINGER = 2.0
# Unread request body dropped to keep a connection alive after its
# response; beyond either bound the connection closes instead.
_DISCARD_BYTES = 1 << 20
_DISCARD_TIME = 1.0

# Eager task start (3.12+): the app runs at once, inside the read that
# completed its request, instead of one loop iteration later.
_EAGER = sys.version_info >= (3, 12)


class Mode(enum.Enum):
    """Where a connection is; see the module docstring."""

    FRESH = "fresh"            # accepted; no byte of a request yet
    HEAD = "head"              # a request head is arriving
    EXCHANGE = "exchange"      # a request is being served
    DISCARD = "discard"        # response complete; dropping the rest of the body
    IDLE = "idle"              # keep-alive: waiting for the next request
    LINGER = "linger"          # answered with an error; dropping input until close
    WEBSOCKET = "websocket"
    CLOSED = "closed"


_WAITING = (Mode.FRESH, Mode.IDLE, Mode.HEAD)


class HTTPProtocol(asyncio.Protocol):
    """One client connection; see the module docstring."""

    def __init__(self, worker: "ASGIWorker") -> None:
        self.worker = worker
        self.loop = worker.loop
        self.reader = RequestReader(worker.limits)
        self.transport: asyncio.Transport | None = None
        self.mode = Mode.FRESH
        self.cycle: Cycle | None = None
        # Deadlines are checked by the worker's sweep (ASGIWorker.sweep):
        # setting one per request is a float store, not a timer armed and
        # cancelled on the loop.  0 = none.
        self.deadline = 0.0
        self.since = worker.loop.time()  # waiting since (accept, or the last response)
        self.postponed = False  # a deadline deferred once for bytes already in the kernel
        self.fd = -1
        self.trusted = False  # the peer may set proxy headers
        self.read_paused = False
        self.write_paused = False
        self.eof = False
        self.write_shut = False  # write_eof() done: lingering
        self.drain_waiters: list[asyncio.Future] = []
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.closed = False
        self.ws: Any = None  # a WebSocketSession once upgraded
        self.served = 0
        self.discard_left = 0
        self.processing = False
        self.again = False

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        worker = self.worker
        worker.sweep_soon()
        sock = transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):  # TCP; a unix socket's names are paths
            self.server = (local[0], local[1])
            # None if the peer is already gone (reset before this callback).
            self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        else:
            self.server = (local, None) if local else None
        self.trusted = worker.proxy.trusts(self.client[0] if self.client else None)
        grace = worker.header_timeout
        if worker.draining:
            grace = min(grace, FIRST_REQUEST_GRACE) if grace > 0 else FIRST_REQUEST_GRACE
        self._set_deadline(grace)

    def data_received(self, data: bytes) -> None:
        mode = self.mode
        if mode is Mode.LINGER:
            return  # dropped: the connection is closing after an error
        if mode is Mode.WEBSOCKET:
            self.ws.feed(data)
            return
        self.postponed = False
        if mode is Mode.IDLE or mode is Mode.FRESH:
            # First bytes of a request: the whole head must arrive within
            # header_timeout from now.
            self.mode = Mode.HEAD
            self._set_deadline(self.worker.header_timeout)
        self.reader.feed(data)
        self._process()

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.mode is Mode.WEBSOCKET or self.mode is Mode.LINGER:
            return None  # close
        self.reader.feed(b"")
        self._process()
        # Keep the write side open while a response is being produced.
        return True if self.mode is Mode.EXCHANGE and not self.closed else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.mode = Mode.CLOSED
        self.deadline = 0.0
        self.worker.connection_closed(self)
        if self.ws is not None:
            self.ws.connection_lost()
        cycle = self.cycle
        if cycle is not None:
            cycle.connection_lost()
        self._wake_writers()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake_writers()

    def _wake_writers(self) -> None:
        for fut in self.drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self.drain_waiters.clear()

    # -- reading -------------------------------------------------------------

    def _process(self) -> None:
        """Turn buffered bytes into events while there is room for them,
        then let the transport read exactly when there is room.  Re-entered
        from an app that completes its response at once (eager tasks), it
        only asks the outer call to go round again."""
        if self.processing:
            self.again = True
            return
        self.processing = True
        try:
            self.again = True
            while self.again and not self.closed:
                self.again = False
                self._parse()
        finally:
            self.processing = False
        self._sync_reading()

    def _parse(self) -> None:
        reader = self.reader
        while True:
            mode = self.mode
            cycle = self.cycle
            if mode is Mode.EXCHANGE:
                assert cycle is not None
                if cycle.body_state is not Body.RECEIVING:
                    # The next request waits in the reader until this
                    # response is complete.  EOF with nothing behind the
                    # request: the client is gone (or half-closed).
                    if self.eof and not reader.buffered:
                        cycle.client_finished()
                    return
                if cycle.body_size >= BODY_HIGH_WATER:
                    return  # until the app takes some
            elif mode is not Mode.DISCARD and mode not in _WAITING:
                return
            try:
                event = reader.next_event()
            except HTTPError as exc:
                self._bad_request(exc)
                return
            if event is NEED_DATA:
                return
            kind = type(event)
            if kind is bytes:
                if mode is Mode.DISCARD:
                    self.discard_left -= len(event)
                    if self.discard_left < 0:
                        self.close()
                        return
                else:
                    cycle.add_body(event)  # type: ignore[union-attr]
            elif kind is EndOfMessage:
                if mode is Mode.DISCARD:
                    self._next_request()
                else:
                    cycle.end_body()  # type: ignore[union-attr]
            elif kind is Request:
                self._start(event)  # type: ignore[arg-type]
            elif isinstance(event, ConnectionClosed):
                self.close()
                return
            else:
                return  # PAUSED: not reached, the modes above stop first

    def _sync_reading(self) -> None:
        """Pause or resume the transport: see the module docstring."""
        mode = self.mode
        if mode is Mode.WEBSOCKET or self.closed or self.transport is None:
            return  # a WebSocket session does its own flow control
        want = True
        if mode is Mode.EXCHANGE:
            cycle = self.cycle
            if cycle.body_state is Body.RECEIVING:  # type: ignore[union-attr]
                want = cycle.body_size < BODY_HIGH_WATER  # type: ignore[union-attr]
            else:
                want = self.reader.buffered < BODY_HIGH_WATER
        if want:
            self.resume_reading()
        else:
            self.pause_reading()

    def body_consumed(self, cycle: Cycle) -> None:
        """The app took the buffered body: parse and read on."""
        if cycle is self.cycle:
            self._process()

    def _bad_request(self, exc: HTTPError) -> None:
        """The reader failed (a malformed head or body): answer with its
        status if no response has begun, and close, lingering."""
        self.worker.log.debug("Bad request from %s: %s", self.client, exc)
        mode = self.mode
        status = exc.status
        if mode is Mode.EXCHANGE:
            self.mode = Mode.LINGER  # first: the ending exchange must not close us
            if not self.cycle.reject(status):  # type: ignore[union-attr]
                status = 0
        elif mode is Mode.DISCARD:
            status = 0  # its response is complete
        self._refuse(status)

    def _start(self, req: Request) -> None:
        worker = self.worker
        self.deadline = 0.0
        if req.upgrade is not None and req.upgrade.lower() == b"websocket":
            if upgrade_to_websocket(self, req):
                self.mode = Mode.WEBSOCKET
                return
        if worker.limit_concurrency and worker.active >= worker.limit_concurrency:
            self._refuse(503)
            return
        keep_alive = req.keep_alive and worker.keepalive > 0
        cycle = self.cycle = Cycle(self, req, self.scope_for(req), keep_alive)
        self.mode = Mode.EXCHANGE
        worker.active += 1
        # The master names this request if the loop stops beating: the
        # request started last is the likeliest to have blocked it.
        worker.heartbeat.set_current(req.raw_line)
        if not worker.pre_request(cycle):
            worker.active -= 1
            self.write(error_response(500))
            cycle.reject(500)
            return
        if _EAGER:
            task = asyncio.Task(cycle.run(worker.app), loop=self.loop, eager_start=True)
        else:
            task = self.loop.create_task(cycle.run(worker.app))
        worker.keep(task)

    def scope_for(self, req: Request, websocket: bool = False) -> dict[str, Any]:
        """The ASGI scope of a request on this connection; proxy headers
        count only from a peer trusted when the connection was made."""
        worker = self.worker
        forwarded = worker.proxy.from_headers(req.headers) if self.trusted else NOT_FORWARDED
        return http_scope(req, self.server, self.client, forwarded, worker.root_path,
                          worker.lifespan.state_or_none, websocket)

    # -- the end of an exchange ----------------------------------------------------

    def exchange_done(self, cycle: Cycle) -> None:
        """The response is complete (or the exchange aborted): the
        connection goes on to its next request, though the app may still
        run; or it closes."""
        if cycle is not self.cycle:
            return
        self.cycle = None
        self.worker.exchange_done(cycle)
        if self.closed or self.mode is not Mode.EXCHANGE:
            return  # lost, or refused (LINGER closes by itself)
        if cycle.phase is Phase.ABORTED or not cycle.keep_alive:
            self._close_after_response()
            return
        if cycle.body_state is Body.RECEIVING:
            if cycle.req.expect_continue and not cycle.continue_sent:
                self._close_after_response()  # the client may never send it
                return
            # Read and drop the rest, within bounds, to keep the connection.
            self.mode = Mode.DISCARD
            self.discard_left = _DISCARD_BYTES
            self._set_deadline(_DISCARD_TIME)
            self._process()
            return
        self._next_request()

    def _next_request(self) -> None:
        self.served += 1
        self.since = self.loop.time()
        self.reader.start_next()
        if self.reader.buffered:
            self.mode = Mode.HEAD
            self._set_deadline(self.worker.header_timeout)
        else:
            self.mode = Mode.IDLE
            self._set_deadline(self.worker.keepalive)
        self._process()

    def _close_after_response(self) -> None:
        if self.reader.in_body:
            # Unread input: a plain close could reset the connection before
            # the client has read the response.
            self._linger()
        else:
            self.close()

    def _refuse(self, status: int) -> None:
        """Answer with an error (``status`` 0: none, the head of another
        response went out) and close, reading no further request."""
        if status:
            self.write(error_response(status))
        self._linger()

    def _linger(self) -> None:
        """Shut our side and drop what the client still sends, for a
        moment, so that the kernel does not reset the connection before
        the client has read the response (see SyncWorker._refuse)."""
        self.mode = Mode.LINGER
        transport = self.transport
        if self.closed or transport is None:
            return
        if not self.eof and transport.can_write_eof():
            self.write_shut = True
            transport.write_eof()
            self.resume_reading()
            self._set_deadline(_LINGER)
        else:
            self.close()

    # -- writing and flow control ---------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed and not self.write_shut:
            self.transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        if not self.write_paused or self.closed:
            return
        fut = self.loop.create_future()
        self.drain_waiters.append(fut)
        timeout = self.worker.write_timeout
        timer = self.loop.call_later(timeout, self._write_timed_out, fut) if timeout else None
        try:
            await fut
        finally:
            if timer is not None:
                timer.cancel()
        if self.closed:
            raise ClientDisconnected("the client disconnected")

    def _write_timed_out(self, fut: asyncio.Future) -> None:
        if not fut.done():
            # The client stopped reading: drop it rather than buffer forever.
            self.abort()

    async def send_file(self, f: Any, count: int) -> None:
        """Send ``count`` bytes of ``f``: sendfile where the loop has it
        (asyncio), else reads written with flow control (uvloop)."""
        try:
            await self.loop.sendfile(self.transport, f, 0, count, fallback=False)
            return
        except (NotImplementedError, RuntimeError):
            pass
        left = count
        while left > 0 and not self.closed:
            data = f.read(min(left, 256 * 1024))
            if not data:
                break
            left -= len(data)
            self.write(data)
            await self.drain()

    def pause_reading(self) -> None:
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()

    # -- deadlines ---------------------------------------------------------------

    def _set_deadline(self, seconds: float) -> None:
        self.deadline = self.loop.time() + seconds if seconds > 0 else 0.0

    def on_deadline(self, now: float) -> None:
        """The sweep found this connection's deadline passed."""
        mode = self.mode
        if mode in _WAITING and not self.postponed and self._input_waiting():
            # Bytes (a request, or EOF) sit in the kernel: the loop was busy
            # past the deadline.  Read them before deciding, once.
            self.postponed = True
            self.deadline = now + self.worker.sweep_interval
            return
        self.deadline = 0.0
        if mode is Mode.HEAD:
            self.worker.log.debug("Request head from %s not received in time", self.client)
            self._refuse(408)
        elif mode in _WAITING or mode is Mode.DISCARD or mode is Mode.LINGER:
            self.close()

    def _input_waiting(self) -> bool:
        if self.fd < 0 or self.read_paused:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

    # -- graceful stop -------------------------------------------------------------

    def start_drain(self) -> None:
        """The worker is draining.  An exchange in flight finishes (its
        response says Connection: close); an idle keep-alive connection
        stays open until a request arrives (answered, then closed) or its
        keep-alive timeout ends -- a proxy may be sending on it right now;
        a fresh one gets a short grace for its first request; a WebSocket
        closes with 1012 (service restart)."""
        mode = self.mode
        if mode is Mode.WEBSOCKET:
            self.ws.close(1012)
        elif mode is Mode.FRESH and self.transport is not None:
            deadline = self.loop.time() + FIRST_REQUEST_GRACE
            self.deadline = min(self.deadline, deadline) if self.deadline else deadline

    def evict(self) -> None:
        """Make room for a new connection (worker_connections reached)."""
        if self.mode is Mode.HEAD:
            self._refuse(408)
        else:
            self.close()

    @property
    def waiting(self) -> bool:
        """True while the connection waits on its client between exchanges."""
        return self.mode in _WAITING or self.mode is Mode.LINGER

"""One client connection of the ASGI worker: bytes in through the shared
request reader, requests out to :class:`~.asgi_cycle.Cycle` objects.

The connection's life -- its states (FRESH, HEAD, BUSY, IDLE, LINGER,
CLOSED), deadlines, the keep-alive decision, the drain policy, making room
at ``worker_connections`` -- is the connection core's
(:class:`~forkserve.http.connection.HTTPConnection`); this class moves the
bytes.  While the core says BUSY, :class:`Busy` says what for: an exchange,
discarding the rest of a body its response did not wait for, or a
WebSocket.

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
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

from ..http.asgi import ClientDisconnected, http_scope
from ..http.connection import Close, ConnState, Expiry, HTTPConnection
from ..http.proxy import NOT_FORWARDED
from ..http.proxy_protocol import NEED_MORE as PROXY_NEED_MORE, ProxyPreamble, ProxyProtocolError
from ..http.request import (NEED_DATA, ConnectionClosed, EndOfMessage, HTTPError, Request,
                            RequestReader)
from ..http.response import error_response
from .asgi_cycle import Body, Cycle
from .websocket import upgrade_to_websocket

if TYPE_CHECKING:  # pragma: no cover
    from .asgi import ASGIWorker

__all__ = ["HTTPProtocol", "Busy", "BODY_HIGH_WATER"]

#: Request body read ahead of the app (and pipelined bytes buffered behind
#: a request) before reading from the client pauses.
BODY_HIGH_WATER = 256 * 1024

# Eager task start (3.12+): the app runs at once, inside the read that
# completed its request, instead of one loop iteration later.
_EAGER = sys.version_info >= (3, 12)


class Busy(enum.Enum):
    """What a BUSY connection is doing."""

    EXCHANGE = "exchange"      # a request is being served
    DISCARD = "discard"        # response complete; dropping the rest of its body
    WEBSOCKET = "websocket"    # upgraded: a WebSocketSession has the bytes


_FRESH, _HEAD, _BUSY, _IDLE, _LINGER, _CLOSED = (
    ConnState.FRESH, ConnState.HEAD, ConnState.BUSY, ConnState.IDLE, ConnState.LINGER,
    ConnState.CLOSED)
_EXCHANGE, _DISCARD, _WEBSOCKET = Busy.EXCHANGE, Busy.DISCARD, Busy.WEBSOCKET
_RECEIVING = Body.RECEIVING


class HTTPProtocol(asyncio.Protocol, HTTPConnection):
    """One client connection; see the module docstring."""

    def __init__(self, worker: "ASGIWorker") -> None:
        HTTPConnection.__init__(self, worker.policy, time.monotonic())
        self.worker = worker
        self.loop = worker.loop
        self.reader = RequestReader(worker.limits)
        self.transport: asyncio.Transport | None = None
        self.busy: Busy | None = None
        self.cycle: Cycle | None = None
        self.finished: Any = None  # the Exchange whose body is being discarded
        self.discard_left = 0
        self.postponed = False  # a deadline deferred once for bytes already in the kernel
        self.fd = -1
        self.trusted = False  # the peer may set proxy headers
        self.forwarded = NOT_FORWARDED  # what they said of the current request
        self.preamble: ProxyPreamble | None = None  # until the PROXY header is read
        self.read_paused = False
        self.write_paused = False
        self.write_shut = False  # write_eof() done: lingering
        self.eof = False
        self.closed = False
        self.drain_waiters: list[asyncio.Future] = []
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.client_name = "unix"  # for the access log
        self.ws: Any = None  # a WebSocketSession once upgraded
        self.processing = False
        self.again = False
        # The accepted socket while the loop's TLS handshake runs (no
        # transport yet): how to close the connection meanwhile.
        self.pending_sock: Any = None

    # -- asyncio callbacks ---------------------------------------------------

    def handshaking(self, sock: Any) -> None:
        """The loop does a TLS handshake on ``sock`` before connection_made."""
        self.pending_sock = sock

    @property
    def closable(self) -> bool:
        """Whether close() can act now: connected, or still handshaking."""
        return self.transport is not None or self.pending_sock is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.pending_sock = None
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
        peer_host = self.client[0] if self.client else None
        self.trusted = worker.proxy.trusts(peer_host)
        if self.client is not None:
            self.client_name = self.client[0]
        if worker.proxy_protocol != "off":
            self.preamble = ProxyPreamble(worker.proxy_protocol,
                                          worker.proxy_senders.trusts(peer_host))

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state is _BUSY and self.busy is _WEBSOCKET:
            self.ws.feed(data)
            return
        if state is _LINGER:
            return  # dropped: the connection is closing after an error
        self.postponed = False
        if state is _IDLE or state is _FRESH:
            self.data_arrived(time.monotonic())
        if self.preamble is not None:
            data = self._read_preamble(data)
            if data is None:
                return
        self.reader.feed(data)
        self._process()

    def _read_preamble(self, data: bytes) -> bytes | None:
        """Pass the first bytes through the PROXY header reader: the bytes
        after the header, or None while it is not complete (or the
        connection was refused).  The client address becomes the header's;
        the trust in proxy headers stays the peer's (the proxy's)."""
        try:
            result = self.preamble.feed(data)  # type: ignore[union-attr]
        except ProxyProtocolError as exc:
            self.worker.log.debug("Refused connection from %s: %s", self.client, exc)
            self.preamble = None
            self._refuse(exc.status)
            return None
        if result is PROXY_NEED_MORE:
            return None
        header, rest = result  # type: ignore[misc]
        self.preamble = None
        if header is not None and header.source is not None:
            self.client = header.source
            self.client_name = header.source[0]
        return rest

    def eof_received(self) -> bool | None:
        self.eof = True
        if self.state is _LINGER or self.busy is _WEBSOCKET:
            return None  # close
        self.reader.feed(b"")
        self._process()
        # Keep the write side open while a response is being produced.
        return True if self.busy is _EXCHANGE and not self.closed else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.state = _CLOSED
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
            state = self.state
            cycle = self.cycle
            if state is _BUSY:
                busy = self.busy
                if busy is _EXCHANGE:
                    if cycle.body_state is not _RECEIVING:  # type: ignore[union-attr]
                        # The next request waits in the reader until this
                        # response is complete.  EOF with nothing behind the
                        # request: the client is gone (or half-closed).
                        if self.eof and not reader.buffered:
                            cycle.client_finished()  # type: ignore[union-attr]
                        return
                    if cycle.body_size >= BODY_HIGH_WATER:  # type: ignore[union-attr]
                        return  # until the app takes some
                elif busy is not _DISCARD:
                    return
            elif state is _LINGER or state is _CLOSED:
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
                if self.busy is _DISCARD:
                    self.discard_left -= len(event)
                    if self.discard_left < 0:
                        self.finished.close_because(Close.BODY_UNREAD)
                        self._end_discard()
                        return
                else:
                    cycle.add_body(event)  # type: ignore[union-attr]
            elif kind is EndOfMessage:
                if self.busy is _DISCARD:
                    self._end_discard()
                else:
                    cycle.end_body()  # type: ignore[union-attr]
            elif kind is Request:
                try:
                    self.forwarded = (self.worker.proxy.from_headers(event.headers)  # type: ignore[union-attr]
                                      if self.trusted else NOT_FORWARDED)
                except HTTPError as exc:
                    self._bad_request(exc)  # contradictory scheme headers
                    return
                self._start(event)  # type: ignore[arg-type]
            elif isinstance(event, ConnectionClosed):
                self.close()
                return
            else:
                return  # PAUSED: not reached, the states above stop first

    def _sync_reading(self) -> None:
        """Pause or resume the transport: see the module docstring."""
        if self.closed or self.transport is None or self.busy is _WEBSOCKET:
            return  # a WebSocket session does its own flow control
        want = True
        if self.busy is _EXCHANGE:
            cycle = self.cycle
            if cycle.body_state is _RECEIVING:  # type: ignore[union-attr]
                want = cycle.body_size < BODY_HIGH_WATER  # type: ignore[union-attr]
            else:
                want = self.reader.buffered < BODY_HIGH_WATER
        # Tested here, not only in the callees: it is the same answer on
        # almost every call.
        if want:
            if self.read_paused:
                self.resume_reading()
        elif not self.read_paused:
            self.pause_reading()

    def body_consumed(self, cycle: Cycle) -> None:
        """The app took the buffered body: parse and read on.  With nothing
        in the reader to parse and reading not paused, there is nothing to
        do (the app takes each body message of a request this way)."""
        if cycle is self.cycle and (self.read_paused or self.reader.pending):
            self._process()

    def _bad_request(self, exc: HTTPError) -> None:
        """The reader failed (a malformed head or body): answer with its
        status if no response has begun, and close, lingering."""
        self.worker.log.debug("Bad request from %s: %s", self.client, exc)
        status = exc.status
        cycle = self.cycle
        if cycle is not None:
            self.cycle = None  # first: the ending exchange must not move the connection on
            if not cycle.reject(status):
                status = 0
        elif self.busy is _DISCARD:
            status = 0  # its response is complete
        self._refuse(status)

    def _start(self, req: Request) -> None:
        worker = self.worker
        ex = self.begin(req, time.monotonic(), self.client_name)
        ex.peer = self.client
        if req.upgrade is not None and req.upgrade.lower() == b"websocket":
            if upgrade_to_websocket(self, req):
                self.busy = _WEBSOCKET
                return
        if worker.limit_concurrency and worker.active >= worker.limit_concurrency:
            self._refuse(503)
            return
        cycle = self.cycle = Cycle(self, ex, self.scope_for(req))
        self.busy = _EXCHANGE
        worker.active += 1
        if not worker.begin_request(ex):
            worker.active -= 1
            cycle.fail()  # the pre_request hook failed: a 500
            return
        if _EAGER:
            task = asyncio.Task(cycle.run(worker.app), loop=self.loop, eager_start=True)
        else:
            task = self.loop.create_task(cycle.run(worker.app))
        if not task.done():  # an eager start may have run it to the end
            # Held until Cycle.run ends (worker.app_returned), rather than
            # by keep()'s done-callback: that is one more loop callback per
            # request.
            cycle.task = task
            worker.tasks.add(task)

    def scope_for(self, req: Request, websocket: bool = False) -> dict[str, Any]:
        """The ASGI scope of a request on this connection; proxy headers
        count only from a peer trusted when the connection was made (read
        as the request arrived, into ``forwarded``)."""
        worker = self.worker
        return http_scope(req, self.server, self.client, self.forwarded, worker.root_path,
                          worker.lifespan.state_or_none, websocket, worker.tls)

    # -- the end of an exchange ----------------------------------------------------

    def exchange_done(self, cycle: Cycle) -> None:
        """The response is complete (or the exchange aborted): the end of
        the exchange for every worker kind (hooks, access log, count), and
        the connection goes on to its next request though the app may
        still run; or it closes."""
        if cycle is not self.cycle:
            self.worker.end_exchange(cycle.ex)  # refused by the server meanwhile
            return
        self.cycle = None
        ex = cycle.ex
        policy = self.policy
        discard = ex.keep_alive and cycle.body_state is _RECEIVING
        if discard and not policy.worth_discarding(self.reader):
            ex.close_because(Close.BODY_UNREAD)
            discard = False
        self.worker.end_exchange(ex)
        if self.closed:
            return
        if discard:
            # Read and drop the rest, within bounds, to keep the connection.
            self.busy = _DISCARD
            self.finished = ex
            self.discard_left = policy.drain_bytes
            self.deadline = time.monotonic() + policy.drain_time
            self._process()
            return
        self._end_exchange(ex)

    def _end_discard(self) -> None:
        ex = self.finished
        self.finished = None
        self._end_exchange(ex)

    def _end_exchange(self, ex: Any) -> None:
        self.busy = None
        reader = self.reader
        in_body = reader.in_body
        if not in_body:
            reader.start_next()
        if self.finish(ex, time.monotonic(), bool(reader.buffered) and not in_body):
            # Only bytes already read, an EOF or a paused transport give
            # _process something to do; on a plain keep-alive connection it
            # would just find NEED_DATA (a head search) and resume nothing.
            if reader.pending or self.read_paused:
                self._process()
        elif in_body:
            # Unread input: a plain close could reset the connection before
            # the client has read the response.
            self.linger()
        else:
            self.close()

    def _refuse(self, status: int) -> None:
        """Answer with an error (``status`` 0: none, the head of another
        response went out) and close, reading no further request."""
        if status:
            self.write(error_response(status))
        self.linger()

    def linger(self) -> None:
        """Shut our side and drop what the client still sends, for a
        moment, so that the kernel does not reset the connection before
        the client has read the response (see SyncWorker._refuse)."""
        self.busy = None
        self.refuse(time.monotonic())
        transport = self.transport
        if self.closed or transport is None:
            return
        if not self.eof and transport.can_write_eof():
            self.write_shut = True
            transport.write_eof()
            self.resume_reading()
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
        elif self.pending_sock is not None:
            self._cut_handshake()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.abort()
        elif self.pending_sock is not None:
            self._cut_handshake()

    def _cut_handshake(self) -> None:
        """End a TLS handshake the loop is still doing: shut the socket
        down under it, so that the handshake fails and the loop closes."""
        sock, self.pending_sock = self.pending_sock, None
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- deadlines ---------------------------------------------------------------

    def on_deadline(self, now: float) -> None:
        """The sweep found this connection's deadline passed."""
        if self.state is _BUSY:
            if self.busy is _DISCARD:  # the rest of a body did not come in time
                self.deadline = 0.0
                self.finished.close_because(Close.BODY_UNREAD)
                self._end_discard()
            return
        expiry = self.expired(now)
        if expiry is Expiry.NONE:
            return
        if self.state is not _LINGER and not self.postponed and self._input_waiting():
            # Bytes (a request, or EOF) sit in the kernel: the loop was busy
            # past the deadline.  Read them before deciding, once.
            self.postponed = True
            self.deadline = now + self.worker.sweep_interval
            return
        self.deadline = 0.0
        if expiry is Expiry.TIMEOUT:
            self.worker.log.debug("Request head from %s not received in time", self.client)
            self._refuse(408)
        else:
            self.close()

    def _input_waiting(self) -> bool:
        if self.fd < 0 or self.read_paused:
            return False
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        return bool(poller.poll(0))

    # -- graceful stop -------------------------------------------------------------

    def begin_drain(self, now: float) -> None:
        """The worker is draining (the connection core's policy: an idle
        keep-alive connection stays open until a request arrives, answered
        with Connection: close, or its keep-alive timeout; a fresh one gets a
        short grace); a WebSocket closes with 1012 (service restart)."""
        if self.busy is _WEBSOCKET:
            self.ws.close(1012)
        else:
            self.start_drain(now)

    def evict(self) -> None:
        """Make room for a new connection (worker_connections reached)."""
        if self.state is _HEAD:
            self._refuse(408)
        else:
            self.close()

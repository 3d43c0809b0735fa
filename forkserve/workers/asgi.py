"""The ASGI worker: HTTP/1.1 and WebSockets on uvloop (asyncio if absent).

Per connection an :class:`HTTPProtocol` (transport, request reader, timers,
flow control); per request a :class:`Cycle` (the app's receive and send).
Requests are read by the same strict reader as the sync worker's.

Liveness: the heartbeat is beaten by a callback on the event loop itself, so
a loop blocked by a synchronous call stops beating and the arbiter kills the
worker after ``timeout``, just like a stuck sync worker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
import traceback
from typing import Any

from ..http.asgi import ResponseHead, build_head, head_bytes, http_scope
from ..http.proxy import NOT_FORWARDED, ProxyTrust
from ..http.request import (NEED_DATA, ConnectionClosed, EndOfMessage, HTTPError,
                            Request, RequestReader)
from ..http.response import (LAST_CHUNK, ResponseError, body_allowed, check_header, chunk,
                             error_response)
from .base import Worker
from .lifespan import Lifespan
from .sync import limits_from

__all__ = ["ASGIWorker", "ClientDisconnected"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Request body buffered for the app before reading from the client pauses.
_BODY_HIGH_WATER = 256 * 1024
# On graceful stop, how long a new connection may take to send its first
# request before it is closed.
_FIRST_REQUEST_GRACE = 2.0
# How long a connection refused with an error is drained before it closes.
_LINGER = 2.0


class ClientDisconnected(OSError):
    """send() after the client went away (ASGI HTTP spec 2.4)."""


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a declared dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class Cycle:
    """One request and its response."""

    __slots__ = ("proto", "req", "scope", "keep_alive", "body", "body_size", "body_complete",
                 "disconnected", "waiter", "head", "head_sent", "complete",
                 "chunked", "allow_body", "written", "continue_sent", "start", "sent",
                 "status")

    def __init__(self, proto: "HTTPProtocol", req: Request, scope: dict, keep_alive: bool) -> None:
        self.proto = proto
        self.req = req
        self.scope = scope
        self.keep_alive = keep_alive
        # Body chunks read but not yet received by the app: a list, so a
        # body that came in one read reaches the app as that same object.
        self.body: list[bytes] = []
        self.body_size = 0
        self.body_complete = False
        self.disconnected = False
        self.waiter: asyncio.Future | None = None
        self.head: ResponseHead | None = None
        self.head_sent = False
        self.complete = False
        self.chunked = False
        self.allow_body = True
        self.written = 0
        self.continue_sent = False
        self.start = time.monotonic()
        self.sent = 0
        self.status = 0

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, app: Any) -> None:
        proto = self.proto
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if isinstance(exc, asyncio.CancelledError) and self.disconnected:
                pass
            else:
                proto.worker.log.error("Exception in ASGI application (%s):\n%s",
                                       self.req.raw_line.decode("latin-1"),
                                       traceback.format_exc())
            self._fail(500)
        else:
            if not self.head_sent and not self.disconnected:
                if self.head is None:
                    proto.worker.log.error("ASGI callable returned without starting a response "
                                           "(%s)", self.req.raw_line.decode("latin-1"))
                    self._fail(500)
                else:
                    # A start with no body message: an empty body.
                    await self.send({"type": "http.response.body", "body": b""})
            elif not self.complete and not self.disconnected:
                proto.worker.log.error("ASGI callable returned without completing the "
                                       "response (%s)", self.req.raw_line.decode("latin-1"))
                self.keep_alive = False
        finally:
            proto.cycle_done(self)

    def _fail(self, status: int) -> None:
        self.keep_alive = False
        self.status = status
        if not self.head_sent and not self.disconnected:
            self.head_sent = True
            self.proto.write(error_response(status))
        self.complete = True

    # -- receive -----------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        if self.req.expect_continue and not self.continue_sent and not self.body_complete:
            self.continue_sent = True
            if not self.head_sent:
                self.proto.write(_CONTINUE)
        while not self.body and not self.body_complete and not self.disconnected:
            self.proto.resume_reading()
            self.waiter = self.proto.loop.create_future()
            try:
                await asyncio.wait_for(self.waiter, self.proto.worker.body_timeout)
            except asyncio.TimeoutError:
                # The client stopped sending its body: give up on it.
                self.keep_alive = False
                self.disconnected = True
                self.proto.abort()
            finally:
                self.waiter = None
        if self.disconnected and not self.body and not self.body_complete:
            return {"type": "http.disconnect"}
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.body_size = 0
        self.proto.resume_reading()
        return {"type": "http.request", "body": data, "more_body": not self.body_complete}

    # -- send --------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client disconnected")
        kind = message["type"]
        if self.head is None:
            if kind != "http.response.start":
                raise RuntimeError(f"expected http.response.start, got {kind!r}")
            self.head = build_head(message)
            self.status = self.head.status
            if self.head.close:
                self.keep_alive = False
            self.allow_body = body_allowed(self.req.method, self.head.status)
            return
        if self.complete:
            raise RuntimeError(f"{kind!r} sent after the response completed")
        if kind == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise ResponseError(f"body must be bytes, got {type(body).__name__}")
            self._write_body(bytes(body), more)
        elif kind == "http.response.trailers" and self.head.trailers:
            self._write_trailers(message)
        elif kind == "http.response.pathsend":
            await self._pathsend(message["path"])
            return
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.proto.write_paused and not self.disconnected:
            await self.proto.drain()

    def _write_head(self, body_len: int | None) -> bytes:
        head = self.head
        assert head is not None
        self.head_sent = True
        framing = b""
        if not self.allow_body:
            if head.content_length is not None and self.req.method == b"HEAD":
                framing = b"content-length: %d\r\n" % head.content_length
        elif head.content_length is not None:
            framing = b"content-length: %d\r\n" % head.content_length
        elif body_len is not None and not head.trailers:
            head.content_length = body_len
            framing = b"content-length: %d\r\n" % body_len
        elif self.req.http_version == b"1.1":
            self.chunked = True
            framing = b"transfer-encoding: chunked\r\n"
        else:
            self.keep_alive = False  # close-delimited
        return head_bytes(head, framing, not self.keep_alive)

    def _frame(self, body: bytes) -> bytes:
        if not self.allow_body or not body:
            return b""
        if self.chunked:
            self.sent += len(body)
            return chunk(body)
        cl = self.head.content_length  # type: ignore[union-attr]
        if cl is not None:
            left = cl - self.written
            if len(body) > left:
                body = body[:left]
                self.keep_alive = False
            self.written += len(body)
        self.sent += len(body)
        return body

    def _write_body(self, body: bytes, more: bool) -> None:
        out = b""
        if not self.head_sent:
            out = self._write_head(None if more else len(body))
        out += self._frame(body)
        if not more:
            # With trailers announced, the trailers message ends the response.
            if not self.head.trailers:  # type: ignore[union-attr]
                if self.chunked:
                    out += LAST_CHUNK
                self._finish()
        if out:
            self.proto.write(out)

    def _write_trailers(self, message: dict[str, Any]) -> None:
        if not self.head_sent:
            raise RuntimeError("http.response.trailers before the body")
        if message.get("more_trailers", False):
            raise RuntimeError("more_trailers is not supported")
        lines = []
        for name, value in message.get("headers", ()):
            check_header(name, value)
            lines.append(name + b": " + value + b"\r\n")
        if self.chunked:
            self.proto.write(b"0\r\n" + b"".join(lines) + b"\r\n")
        # Not chunked (HTTP/1.0, or a content-length from the app): trailers
        # cannot be sent and are dropped, as the extension allows.
        self._finish()

    async def _pathsend(self, path: str) -> None:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = self._write_head(size) if not self.head_sent else b""
            count = size if self.head.content_length is None else min(  # type: ignore[union-attr]
                size, self.head.content_length)  # type: ignore[union-attr]
            if head:
                self.proto.write(head)
            if self.allow_body and count:
                await self.proto.send_file(f, count)
                self.sent += count
                self.written += count
        self._finish()

    def _finish(self) -> None:
        self.complete = True
        cl = self.head.content_length if self.head else None  # type: ignore[union-attr]
        if self.allow_body and cl is not None and self.written < cl and not self.chunked:
            self.keep_alive = False


class HTTPProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, worker: "ASGIWorker") -> None:
        self.worker = worker
        self.loop = worker.loop
        self.reader = RequestReader(worker.limits)
        self.transport: asyncio.Transport | None = None
        self.cycle: Cycle | None = None
        # Idle and header timeouts are deadlines that the worker's sweep
        # checks (ASGIWorker.sweep): setting one per request is a float
        # store, not a timer armed and cancelled on the loop.  0 = none.
        self.deadline = 0.0
        self.timer_is_header = False
        self.linger_timer: asyncio.TimerHandle | None = None
        self.trusted = False  # the peer may set proxy headers
        self.read_paused = False
        self.write_paused = False
        self.drain_waiters: list[asyncio.Future] = []
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int | None] | None = None
        self.closed = False
        self.ws: Any = None  # a WebSocketSession once upgraded
        self.lingering = False
        self.served = 0

    # -- asyncio callbacks ---------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        worker = self.worker
        worker.connections.add(self)
        if worker.sweep_handle is None:
            worker.sweep_handle = self.loop.call_later(worker.sweep_interval, worker.sweep)
        peer = transport.get_extra_info("peername")
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):  # TCP; a unix socket's names are paths
            self.server = (local[0], local[1])
            # None if the peer is already gone (reset before this callback).
            self.client = (peer[0], peer[1]) if isinstance(peer, tuple) else None
        else:
            self.server = (local, None) if local else None
        self.trusted = worker.proxy.trusts(self.client[0] if self.client else None)
        self._set_timer(worker.cfg.header_timeout, header=True)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # dropped: the connection is closing after an error
        if self.ws is not None:
            self.ws.feed(data)
            return
        if self.cycle is None and self.reader.idle and not self.timer_is_header:
            # First byte of the next request: the whole head must arrive
            # within header_timeout from now.
            self._set_timer(self.worker.cfg.header_timeout, header=True)
        self.reader.feed(data)
        self._process()

    def eof_received(self) -> bool | None:
        if self.ws is not None or self.lingering:
            return None
        self.reader.feed(b"")
        self._process()
        # Keep the write side open while a response is being produced.
        return True if self.cycle is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.worker.connections.discard(self)
        self._cancel_timer()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        if self.ws is not None:
            self.ws.connection_lost()
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.wake()
        for fut in self.drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self.drain_waiters.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for fut in self.drain_waiters:
            if not fut.done():
                fut.set_result(None)
        self.drain_waiters.clear()

    # -- reading -------------------------------------------------------------

    def _process(self) -> None:
        reader = self.reader
        while not self.closed:
            cycle = self.cycle
            if cycle is not None and cycle.body_complete:
                # Pipelined bytes wait in the reader until the response is
                # done; stop reading if a client sends too much ahead.
                if reader.buffered > _BODY_HIGH_WATER:
                    self.pause_reading()
                return
            try:
                event = reader.next_event()
            except HTTPError as exc:
                if cycle is not None:
                    cycle.keep_alive = False
                    cycle.disconnected = True
                    cycle.wake()
                    self._refuse(exc, cycle.head_sent)
                else:
                    self._refuse(exc, False)
                return
            if event is NEED_DATA:
                return
            if type(event) is bytes:
                assert cycle is not None
                cycle.body.append(event)
                cycle.body_size += len(event)
                cycle.wake()
                if cycle.body_size > _BODY_HIGH_WATER:
                    self.pause_reading()
                    return
                continue
            if isinstance(event, EndOfMessage):
                assert cycle is not None
                cycle.body_complete = True
                cycle.wake()
                continue
            if isinstance(event, Request):
                self._start(event)
                if self.ws is not None:
                    return  # the connection speaks WebSocket now
                continue
            if isinstance(event, ConnectionClosed):
                self.close()
            return

    def _start(self, req: Request) -> None:
        self._cancel_timer()
        worker = self.worker
        if req.upgrade is not None and req.upgrade.lower() == b"websocket":
            from .websocket import upgrade_to_websocket
            if upgrade_to_websocket(self, req):
                return
        if worker.limit_concurrency and worker.active >= worker.limit_concurrency:
            self.write(error_response(503))
            self.close()
            return
        scope = self.scope_for(req)
        keep_alive = req.keep_alive and worker.alive and worker.keepalive > 0
        cycle = self.cycle = Cycle(self, req, scope, keep_alive)
        worker.active += 1
        # The master names this request if the loop stops beating: the
        # request started last is the likeliest to have blocked it.
        worker.heartbeat.set_current(req.raw_line)
        self.loop.create_task(cycle.run(worker.app))

    def scope_for(self, req: Request, websocket: bool = False) -> dict[str, Any]:
        """The ASGI scope of a request on this connection; proxy headers
        count only from a peer trusted when the connection was made."""
        worker = self.worker
        forwarded = worker.proxy.from_headers(req.headers) if self.trusted else NOT_FORWARDED
        return http_scope(req, self.server, self.client, forwarded, worker.root_path,
                          worker.lifespan.state_or_none, websocket)

    def cycle_done(self, cycle: Cycle) -> None:
        worker = self.worker
        worker.active -= 1
        worker.request_done()
        if worker.access_log.enabled:
            worker.log_access(cycle, self)
        self.cycle = None
        self.served += 1
        if self.closed:
            return
        if not cycle.keep_alive or not cycle.body_complete or not worker.alive:
            self.close()
            return
        self.reader.start_next()
        self.resume_reading()
        self._set_timer(worker.keepalive, header=False)
        if self.reader.buffered:
            self._set_timer(worker.cfg.header_timeout, header=True)
            self._process()

    def _refuse(self, exc: HTTPError, head_sent: bool) -> None:
        """Answer with an error and close, reading no further request; the
        close lingers, as in the sync worker (see SyncWorker._refuse)."""
        if head_sent or self.closed:
            self.close()
            return
        self.write(error_response(exc.status))
        self.lingering = True
        transport = self.transport
        if transport.can_write_eof():  # type: ignore[union-attr]
            transport.write_eof()  # type: ignore[union-attr]
            self.resume_reading()
            self._cancel_timer()
            self.linger_timer = self.loop.call_later(_LINGER, self.close)
        else:
            self.close()

    # -- writing and flow control ---------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    async def drain(self) -> None:
        if not self.write_paused or self.closed:
            return
        fut = self.loop.create_future()
        self.drain_waiters.append(fut)
        try:
            await asyncio.wait_for(fut, self.worker.write_timeout)
        except asyncio.TimeoutError:
            # The client stopped reading: drop it rather than buffer forever.
            self.abort()
            raise ClientDisconnected("the client stopped reading") from None

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

    # -- timers ----------------------------------------------------------------

    def _set_timer(self, seconds: float, header: bool) -> None:
        self.timer_is_header = header
        self.deadline = self.loop.time() + seconds if seconds > 0 else 0.0

    def _cancel_timer(self) -> None:
        self.deadline = 0.0

    def on_deadline(self) -> None:
        """The sweep found this connection's deadline passed."""
        self.deadline = 0.0
        if self.cycle is not None:
            return
        if not self.reader.idle:
            self._refuse(HTTPError(408, "request head not received in time"), False)
            return
        self.close()

    # -- graceful stop ----------------------------------------------------------

    def shutdown(self) -> None:
        """Close now if idle; otherwise after the current response; a
        WebSocket with 1012 (service restart)."""
        if self.ws is not None:
            self.ws.close(1012)
        elif self.cycle is not None:
            self.cycle.keep_alive = False
        elif self.served and self.reader.idle:
            # Idle keep-alive: clients retry a request on a reused
            # connection that the server closed.
            self.close()
        else:
            # A new connection has not sent its first request yet (or is
            # sending it): a client does not retry on a fresh connection,
            # so give it a moment; its response will close it.
            self._set_timer(_FIRST_REQUEST_GRACE, header=True)


class ASGIWorker(Worker):
    """ASGI worker; see the module docstring."""

    kind = "asgi"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.loop = new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.limits = limits_from(cfg)
        self.proxy = ProxyTrust(cfg.forwarded_allow_ips)
        self.keepalive = cfg.keepalive
        self.root_path = cfg.root_path.rstrip("/")
        self.limit_concurrency = cfg.limit_concurrency
        self.body_timeout = cfg.body_timeout or None
        self.write_timeout = cfg.write_timeout or None
        self.connections: set[Any] = set()
        self.active = 0
        self.lifespan = Lifespan(self.app, cfg.lifespan, self.log)
        self.stop_event: asyncio.Event | None = None
        self.beat_interval = min(1.0, cfg.timeout / 4) if cfg.timeout > 0 else 1.0
        # Deadlines are checked this often: a twentieth of the shortest
        # timeout a connection can be given, within 50-500 ms.
        shortest = min(t for t in (cfg.keepalive, cfg.header_timeout, _FIRST_REQUEST_GRACE)
                       if t > 0)
        self.sweep_interval = min(0.5, max(0.05, shortest / 20))
        # Armed by the first connection; an idle worker does not wake for it.
        self.sweep_handle: asyncio.TimerHandle | None = None

    def startup(self) -> bool:
        # The heartbeat must not expire while a slow startup runs.
        self.heartbeat.beat()
        return self.loop.run_until_complete(self.lifespan.startup(self.cfg.timeout))

    def serve(self) -> None:
        loop = self.loop
        self.stop_event = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self._on_term)
        loop.add_signal_handler(signal.SIGUSR1, self._on_usr1)
        servers = []
        for lst in self.listeners:
            if lst.sock.family == socket.AF_UNIX:
                coro = loop.create_unix_server(lambda: HTTPProtocol(self), sock=lst.sock,
                                               backlog=self.cfg.backlog)
            else:
                coro = loop.create_server(lambda: HTTPProtocol(self), sock=lst.sock,
                                          backlog=self.cfg.backlog)
            servers.append(loop.run_until_complete(coro))
        self._tick()
        try:
            loop.run_until_complete(self._run(servers))
        finally:
            loop.close()

    def _on_term(self) -> None:
        self.alive = False
        if self.stop_event is not None:
            self.stop_event.set()

    def _on_usr1(self) -> None:
        self.reopen_requested = True

    def _tick(self) -> None:
        """Runs on the loop: a blocked loop stops beating."""
        self.heartbeat.beat()
        self.heartbeat.set_current(b"")
        self.maintenance()
        if not self.alive and self.stop_event is not None:
            self.stop_event.set()
        self.loop.call_later(self.beat_interval, self._tick)

    def sweep(self) -> None:
        """Close the connections whose idle or header deadline has passed;
        again in ``sweep_interval`` while there are connections."""
        now = self.loop.time()
        for conn in [c for c in self.connections if 0.0 < c.deadline <= now]:
            conn.on_deadline()
        self.sweep_handle = (self.loop.call_later(self.sweep_interval, self.sweep)
                             if self.connections else None)

    async def _run(self, servers: list) -> None:
        assert self.stop_event is not None
        await self.stop_event.wait()
        from ..heartbeat import WorkerState
        self.heartbeat.set_state(WorkerState.STOPPING)
        for server in servers:
            server.close()
        for conn in list(self.connections):
            conn.shutdown()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await self.lifespan.shutdown(self.cfg.graceful_timeout)

    def log_access(self, cycle: Cycle, proto: HTTPProtocol) -> None:
        client = cycle.scope.get("client")
        self.access_log.log_exchange(cycle.req, client[0] if client else "unix", cycle.status,
                                     cycle.sent, (), cycle.start)

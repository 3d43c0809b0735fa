"""One HTTP request and its response as an ASGI app sees them: the
``receive`` and ``send`` callables, checked message by message against the
ASGI HTTP spec (2.4) and its trailers and pathsend extensions.

Two small state machines, one per direction:

* the request body, as ``receive()`` hands it out (:class:`Body`)::

      RECEIVING --end of body read--> READ --more_body False given--> DELIVERED
      any --http.disconnect given (the client is gone)--> DISCONNECTED

* the response, as ``send()`` accepts it (:class:`Phase`)::

      START --start--> STARTED --body--> STREAMING --last body--> COMPLETE
                           |                            \\--(trailers)--> TRAILERS --> COMPLETE
      any state not yet COMPLETE --client gone, server error, app failure--> ABORTED

``receive()`` gives the body while there is body; after ``more_body: False``
it waits, and returns ``http.disconnect`` once the response is complete or
the client is gone (spec: "if receive is called after a response has been
sent or after the HTTP connection has been closed") -- so an app that
listens for a disconnect while it streams sleeps instead of spinning.

The response is complete when its last message is sent, not when the app
returns: the connection goes on to its next request while the app may still
run (a background task); ``send()`` then raises RuntimeError and
``receive()`` says ``http.disconnect``.

What is not ASGI-specific is the connection core's: the body framing
(:class:`~forkserve.http.framing.BodyFramer`), the keep-alive decision and
the record of the exchange (:class:`~forkserve.http.connection.Exchange`,
ended by ``Worker.end_exchange``: hooks, access log, count).  The
connection (workers/asgi_protocol.py) feeds body and events in; the cycle
writes through it.  Nothing here reads a socket.
"""

from __future__ import annotations

import asyncio
import enum
import os
import traceback
from typing import TYPE_CHECKING, Any

from ..http.asgi import (ClientDisconnected, ResponseHead, accepts_trailers, body_bytes,
                         build_head, head_bytes, header_pairs)
from ..http.connection import Close, Exchange
from ..http.framing import BodyFramer
from ..http.response import ResponseError, error_response

if TYPE_CHECKING:  # pragma: no cover
    from .asgi_protocol import HTTPProtocol

__all__ = ["Body", "Phase", "Cycle"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Body(enum.Enum):
    """The request body, as the app receives it."""

    RECEIVING = "receiving"   # more may come from the client
    READ = "read"             # all of it read; some may still wait for the app
    DELIVERED = "delivered"   # the app got more_body False
    DISCONNECTED = "disconnected"  # the app got http.disconnect: send() raises


class Phase(enum.Enum):
    """The response, as the app sends it."""

    START = "start"           # waiting for http.response.start
    STARTED = "started"       # head known, not written: can still become a 500
    STREAMING = "streaming"   # head written, body going out
    TRAILERS = "trailers"     # last body sent; waiting for http.response.trailers
    COMPLETE = "complete"     # the app sent the whole response
    ABORTED = "aborted"       # ended otherwise: client gone, error response, app failure


# Members as module constants: the per-request paths test them often.
_RECEIVING, _READ, _DELIVERED, _DISCONNECTED = (
    Body.RECEIVING, Body.READ, Body.DELIVERED, Body.DISCONNECTED)
_START, _STARTED, _STREAMING, _TRAILERS, _COMPLETE, _ABORTED = (
    Phase.START, Phase.STARTED, Phase.STREAMING, Phase.TRAILERS, Phase.COMPLETE, Phase.ABORTED)
_DONE = (_COMPLETE, _ABORTED)
_HEAD_WRITTEN = (_STREAMING, _TRAILERS, _COMPLETE)


class Cycle:
    """One request and its response; see the module docstring."""

    __slots__ = ("proto", "req", "ex", "scope", "body_state", "body", "body_size", "phase",
                 "client_eof", "waiter", "head", "framer", "trailers", "task")

    def __init__(self, proto: "HTTPProtocol", ex: Exchange, scope: dict) -> None:
        self.proto = proto
        self.ex = ex
        self.req = ex.request
        self.scope = ex.environ = scope
        client = scope["client"]  # the proxy's client if it is trusted
        if client is not None:
            ex.client = client[0]
        self.body_state = _RECEIVING
        # Body chunks read but not yet received by the app: a list, so a
        # body that came in one read reaches the app as that same object.
        self.body: list[bytes] = []
        self.body_size = 0
        self.phase = _START
        # The client sent EOF after its whole request: for receive() it is
        # gone (it may have only half-closed: a response still goes out).
        self.client_eof = False
        self.waiter: asyncio.Future | None = None
        self.head: ResponseHead | None = None
        self.framer: BodyFramer | None = None
        self.trailers: list[tuple[bytes, bytes]] = []
        self.task: asyncio.Task | None = None  # the app's, while the worker holds it

    # -- from the connection ---------------------------------------------------

    # The waiter is tested before calling wake() on the per-request paths:
    # an app is rarely waiting there (a small body comes with its head).

    def add_body(self, data: bytes) -> None:
        self.body.append(data)
        self.body_size += len(data)
        if self.waiter is not None:
            self.wake()

    def end_body(self) -> None:
        self.body_state = _READ
        # The whole body is in: no 100 Continue is owed any more.
        self.ex.continue_pending = False
        if self.waiter is not None:
            self.wake()

    def client_finished(self) -> None:
        if not self.client_eof:
            self.client_eof = True
            self.wake()

    def connection_lost(self) -> None:
        self.ex.close_because(Close.CLIENT_GONE)
        self.finish(_ABORTED)

    def reject(self, status: int) -> bool:
        """The server answers for the app (a malformed body): True if the
        error response may still be written (no head went out)."""
        fresh = self.phase not in _HEAD_WRITTEN
        if fresh:
            self.ex.set_status(status)
        self.ex.close_because(Close.BAD_BODY)
        self.finish(_ABORTED)
        return fresh

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def finish(self, phase: Phase) -> None:
        """The one way into COMPLETE or ABORTED: the exchange is over for
        the connection (the app may run on)."""
        if self.phase is _COMPLETE or self.phase is _ABORTED:
            return
        self.phase = phase
        if self.framer is not None:
            self.ex.sent = self.framer.framed
        if self.waiter is not None:
            self.wake()
        self.proto.exchange_done(self)

    # -- the app's task -----------------------------------------------------------

    async def run(self, app: Any) -> None:
        # The master names this request if the loop stops beating or the
        # worker dies: the app that began running last is the likeliest
        # cause.  Set here, when the app is called, not when the request
        # was parsed: another request parsed in between would take the
        # blame (a crash on GET /segv logged as on GET /version).
        self.proto.worker.heartbeat.set_current(self.ex.request.raw_line)
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self._app_failed(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if result is not None:
                self._log_error("ASGI callable returned %r; it must return None", result)
            if self.phase not in _DONE:
                self._app_returned()
        finally:
            self.proto.worker.app_returned(self.task)

    def _app_failed(self, exc: BaseException) -> None:
        gone = self.phase is _ABORTED or self.proto.closed or self.client_eof
        # Our own ClientDisconnected, or a cancellation once the client is
        # gone, is how an app is expected to end: not an error (spec 2.4),
        # and nobody to answer.
        if isinstance(exc, ClientDisconnected) or (gone and isinstance(exc, asyncio.CancelledError)):
            self.ex.close_because(Close.CLIENT_GONE)
            self.finish(_ABORTED)
            return
        self._log_error("Exception in ASGI application\n%s", traceback.format_exc())
        self.fail()

    def _app_returned(self) -> None:
        """The app returned before its response was complete."""
        phase = self.phase
        if phase is _START:
            if self.body_state is _DISCONNECTED:  # it saw its client go: no answer due
                self.ex.close_because(Close.CLIENT_GONE)
                self.finish(_ABORTED)
                return
            self._log_error("ASGI callable returned without starting a response")
        elif phase is _STARTED:
            self._log_error("ASGI callable returned after http.response.start without "
                            "sending the body")
        else:
            self._log_error("ASGI callable returned without completing the response")
        self.fail()

    def fail(self) -> None:
        """End an exchange the app did not complete: a 500 while no head
        went out, else the connection closes (a truncated body)."""
        if self.phase in _DONE:
            return
        self.ex.close_because(Close.APP_ERROR)
        if self.phase not in _HEAD_WRITTEN:
            self.ex.set_status(500)
            self.proto.write(error_response(500))
        self.finish(_ABORTED)

    def _log_error(self, msg: str, *args: Any) -> None:
        self.proto.worker.log.error("%s: " + msg, self.req.raw_line.decode("latin-1"), *args)

    # -- receive ---------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while True:
            phase = self.phase
            if phase is _COMPLETE or phase is _ABORTED:
                return {"type": "http.disconnect"}
            state = self.body_state
            if (self.body_size and state is not _DISCONNECTED) or state is _READ:
                return self._take_body()
            if self.client_eof or self.proto.closed or state is _DISCONNECTED:
                # Told once, the app can expect send() to raise (spec 2.4).
                self.body_state = _DISCONNECTED
                return {"type": "http.disconnect"}
            if state is _RECEIVING:
                if self.ex.continue_pending:
                    self.ex.continue_pending = False
                    if phase is _START or phase is _STARTED:
                        self.proto.write(_CONTINUE)
                await self._wait(self.proto.worker.body_timeout)
            else:
                await self._wait(None)  # until the response completes or the client goes

    def _take_body(self) -> dict[str, Any]:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.body_size = 0
        self.ex.received += len(data)
        more = self.body_state is _RECEIVING
        if not more:
            self.body_state = _DELIVERED
        # Room again: the connection reads on (and parses what it holds).
        self.proto.body_consumed(self)
        return {"type": "http.request", "body": data, "more_body": more}

    async def _wait(self, timeout: float | None) -> None:
        waiter = self.waiter = self.proto.loop.create_future()
        timer = (self.proto.loop.call_later(timeout, self._body_timed_out, waiter)
                 if timeout else None)
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def _body_timed_out(self, waiter: asyncio.Future) -> None:
        if waiter is self.waiter and not waiter.done():
            # The client stopped sending its body: give up on it.
            self.proto.abort()

    # -- send ----------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise ResponseError(f"an ASGI message is a dict with a 'type', got "
                                f"{type(message).__name__}") from None
        phase = self.phase
        if phase is _COMPLETE:
            raise RuntimeError(f"{kind!r} sent after the response completed")
        if phase is _ABORTED or self.proto.closed or self.body_state is _DISCONNECTED:
            raise ClientDisconnected("the client disconnected")
        if phase is _START:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self.head = head = build_head(message)
            self.ex.set_status(head.status)
            self.ex.response_headers = head.pairs
            self.phase = _STARTED
            return
        if kind == "http.response.body":
            if phase is _TRAILERS:
                raise RuntimeError("http.response.body after the last body; expected "
                                   "'http.response.trailers'")
            body = message.get("body", b"")
            if type(body) is not bytes:
                body = body_bytes(message)  # converted, or refused
            self._write_body(body, bool(message.get("more_body", False)))
        elif kind == "http.response.trailers":
            if not self.head.trailers:  # type: ignore[union-attr]
                raise RuntimeError("http.response.trailers without 'trailers': True in "
                                   "http.response.start")
            if phase is not _TRAILERS:
                raise RuntimeError("http.response.trailers before the last http.response.body")
            self._add_trailers(message)
        elif kind == "http.response.pathsend":
            if phase is not _STARTED:
                raise RuntimeError("http.response.pathsend after http.response.body (the "
                                   "two cannot be mixed)")
            await self._pathsend(message)
        elif kind == "http.response.start":
            raise RuntimeError("http.response.start sent twice")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.proto.write_paused:
            await self.proto.drain()

    def _head(self, body_len: int | None) -> bytes:
        """The head, framed by the connection core; ``body_len`` is the
        whole body's length when it comes in one message."""
        head = self.head
        assert head is not None
        req = self.req
        ex = self.ex
        self.phase = _STREAMING
        if head.close:
            ex.close_because(Close.APP)
        framer = self.framer = BodyFramer(req.method, req.http_version, head.status,
                                          head.content_length, body_len, head.trailers)
        if framer.must_close:
            ex.close_because(Close.FRAMING)
        ex.head_sent = True
        return head_bytes(head, framer.header, ex.closes())

    def _write_body(self, body: bytes, more: bool) -> None:
        head = self._head(None if more else len(body)) if self.phase is _STARTED else b""
        framer = self.framer
        framed = framer.frame(body) if body else b""  # type: ignore[union-attr]
        data = head + framed
        if framer.must_close and framer.length is not None and len(framed) < len(body):  # type: ignore[union-attr]
            self.proto.write(data)
            self.ex.close_because(Close.FRAMING)
            raise RuntimeError(f"response body longer than its Content-Length "
                               f"({framer.length})")  # type: ignore[union-attr]
        if more:
            if data:
                self.proto.write(data)
            return
        if self.head.trailers:  # type: ignore[union-attr]
            self.phase = _TRAILERS
            if data:
                self.proto.write(data)
            return
        self.proto.write(data + framer.end())  # type: ignore[union-attr]
        self._complete()

    def _add_trailers(self, message: dict[str, Any]) -> None:
        self.trailers += header_pairs(message.get("headers", ()), "trailer")
        if message.get("more_trailers", False):
            return
        # Sent only to a client that asked (TE: trailers); otherwise, and
        # when not chunked, the extension lets them be dropped.
        trailers = self.trailers if accepts_trailers(self.req) else None
        self.proto.write(self.framer.end(trailers))  # type: ignore[union-attr]
        self._complete()

    def _complete(self) -> None:
        framer = self.framer
        assert framer is not None
        if framer.must_close:
            self.ex.close_because(Close.FRAMING)
        length = framer.length
        # A length is set only for a body that has one (not HEAD, 204, 304).
        if length is not None and framer.framed < length:
            # The client waits for the rest: the connection closes.
            raise RuntimeError(f"response body shorter than its Content-Length "
                               f"({framer.framed} of {length} bytes)")
        self.finish(_COMPLETE)

    async def _pathsend(self, message: dict[str, Any]) -> None:
        path = message.get("path")
        if type(path) is not str or not os.path.isabs(path):
            raise ResponseError(f"http.response.pathsend needs an absolute path, got {path!r}")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.proto.write(self._head(size))
            framer = self.framer
            count = framer.file_count(size)  # type: ignore[union-attr]
            if count is None:
                # Chunked (trailers announced): read and framed in pieces.
                while data := f.read(256 * 1024):
                    self.proto.write(framer.frame(data))  # type: ignore[union-attr]
                    await self.proto.drain()
            elif count:
                await self.proto.send_file(f, count)
        if self.proto.closed:
            raise ClientDisconnected("the client disconnected")
        if self.head.trailers:  # type: ignore[union-attr]
            self.phase = _TRAILERS
            return
        self.proto.write(self.framer.end())  # type: ignore[union-attr]
        self._complete()

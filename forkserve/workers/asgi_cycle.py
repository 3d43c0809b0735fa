"""One HTTP request and its response as an ASGI app sees them: the
``receive`` and ``send`` callables, checked message by message against the
ASGI HTTP spec (2.4) and its trailers and pathsend extensions.

Two small state machines, one per direction:

* the request body, as ``receive()`` hands it out (:class:`Body`)::

      RECEIVING --end of body read--> READ --more_body False given--> DELIVERED

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

The connection (workers/asgi_protocol.py) feeds body and events in; the
cycle writes through it.  Nothing here reads a socket.
"""

from __future__ import annotations

import asyncio
import enum
import os
import time
import traceback
from typing import TYPE_CHECKING, Any

from ..http.asgi import (ClientDisconnected, ResponseHead, accepts_trailers, body_bytes,
                         build_head, head_bytes, header_lines)
from ..http.request import Request
from ..http.response import LAST_CHUNK, ResponseError, body_allowed, chunk, error_response

if TYPE_CHECKING:  # pragma: no cover
    from .asgi_protocol import HTTPProtocol

__all__ = ["Body", "Phase", "Cycle"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Body(enum.Enum):
    """The request body, as the app receives it."""

    RECEIVING = "receiving"   # more may come from the client
    READ = "read"             # all of it read; some may still wait for the app
    DELIVERED = "delivered"   # the app got more_body False


class Phase(enum.Enum):
    """The response, as the app sends it."""

    START = "start"           # waiting for http.response.start
    STARTED = "started"       # head known, not written: can still become a 500
    STREAMING = "streaming"   # head written, body going out
    TRAILERS = "trailers"     # last body sent; waiting for http.response.trailers
    COMPLETE = "complete"     # the app sent the whole response
    ABORTED = "aborted"       # ended otherwise: client gone, error response, app failure


_DONE = (Phase.COMPLETE, Phase.ABORTED)
_HEAD_WRITTEN = (Phase.STREAMING, Phase.TRAILERS, Phase.COMPLETE)


class Cycle:
    """One request and its response; see the module docstring."""

    __slots__ = ("proto", "req", "scope", "keep_alive", "body_state", "body", "body_size",
                 "phase", "client_eof", "waiter", "head", "chunked", "allow_body", "length",
                 "written", "trailer_lines", "continue_sent", "start", "sent", "status")

    def __init__(self, proto: "HTTPProtocol", req: Request, scope: dict, keep_alive: bool) -> None:
        self.proto = proto
        self.req = req
        self.scope = scope
        self.keep_alive = keep_alive
        self.body_state = Body.RECEIVING
        # Body chunks read but not yet received by the app: a list, so a
        # body that came in one read reaches the app as that same object.
        self.body: list[bytes] = []
        self.body_size = 0
        self.phase = Phase.START
        # The client sent EOF after its whole request: it will not read a
        # response (or half-closed; it may, and gets one if the app sends it).
        self.client_eof = False
        self.waiter: asyncio.Future | None = None
        self.head: ResponseHead | None = None
        self.chunked = False
        self.allow_body = True
        self.length: int | None = None  # the Content-Length that went out
        self.written = 0                # body bytes framed against it
        self.trailer_lines: list[bytes] = []
        self.continue_sent = False
        self.start = time.monotonic()
        self.sent = 0                   # body bytes written, for the access log
        self.status = 0

    # -- from the connection ---------------------------------------------------

    def add_body(self, data: bytes) -> None:
        self.body.append(data)
        self.body_size += len(data)
        self.wake()

    def end_body(self) -> None:
        self.body_state = Body.READ
        self.wake()

    def client_finished(self) -> None:
        """EOF after the whole request: for receive(), the client is gone."""
        if not self.client_eof:
            self.client_eof = True
            self.wake()

    def connection_lost(self) -> None:
        self.keep_alive = False
        self.finish(Phase.ABORTED)

    def reject(self, status: int) -> bool:
        """The server answers for the app (a malformed body): True if the
        error response may still be written (no head went out)."""
        fresh = self.phase not in _HEAD_WRITTEN
        if fresh:
            self.status = status
        self.keep_alive = False
        self.finish(Phase.ABORTED)
        return fresh

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def finish(self, phase: Phase) -> None:
        """The one way into COMPLETE or ABORTED: the exchange is over for
        the connection (the app may run on)."""
        if self.phase in _DONE:
            return
        self.phase = phase
        self.wake()
        self.proto.exchange_done(self)

    # -- the app's task -----------------------------------------------------------

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            self._app_failed(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if result is not None:
                self._log_error("ASGI callable returned %r; it must return None", result)
            self._app_returned()
        finally:
            self.proto.worker.app_returned()

    def _app_failed(self, exc: BaseException) -> None:
        gone = self.phase is Phase.ABORTED or self.proto.closed or self.client_eof
        # Our own ClientDisconnected, or a cancellation once the client is
        # gone, is how an app is expected to end: not an error (spec 2.4).
        if not (isinstance(exc, ClientDisconnected)
                or (gone and isinstance(exc, asyncio.CancelledError))):
            self._log_error("Exception in ASGI application\n%s", traceback.format_exc())
        self._fail()

    def _app_returned(self) -> None:
        phase = self.phase
        if phase in _DONE:
            return
        if phase is Phase.START:
            if not self.client_eof:  # an app that saw its client go need not answer
                self._log_error("ASGI callable returned without starting a response")
        elif phase is Phase.STARTED:
            self._log_error("ASGI callable returned after http.response.start without "
                            "sending the body")
        else:
            self._log_error("ASGI callable returned without completing the response")
        self._fail()

    def _fail(self) -> None:
        """End an exchange the app did not complete: a 500 while no head
        went out, else the connection closes (a truncated body)."""
        if self.phase in _DONE:
            return
        self.keep_alive = False
        if self.phase not in _HEAD_WRITTEN:
            self.status = 500
            self.proto.write(error_response(500))
        self.finish(Phase.ABORTED)

    def _log_error(self, msg: str, *args: Any) -> None:
        self.proto.worker.log.error("%s: " + msg, self.req.raw_line.decode("latin-1"), *args)

    # -- receive ---------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        while True:
            if self.phase in _DONE:
                return {"type": "http.disconnect"}
            state = self.body_state
            if state is not Body.DELIVERED and (self.body_size or state is Body.READ):
                return self._take_body()
            if self.client_eof or self.proto.closed:
                return {"type": "http.disconnect"}
            if state is Body.RECEIVING:
                if self.req.expect_continue and not self.continue_sent:
                    self.continue_sent = True
                    if self.phase is Phase.START or self.phase is Phase.STARTED:
                        self.proto.write(_CONTINUE)
                await self._wait(self.proto.worker.body_timeout)
            else:
                await self._wait(None)  # until the response completes or the client goes

    def _take_body(self) -> dict[str, Any]:
        body = self.body
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.body_size = 0
        more = self.body_state is Body.RECEIVING
        if not more:
            self.body_state = Body.DELIVERED
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
        if phase is Phase.COMPLETE:
            raise RuntimeError(f"{kind!r} sent after the response completed")
        if phase is Phase.ABORTED or self.proto.closed:
            raise ClientDisconnected("the client disconnected")
        if phase is Phase.START:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self.head = head = build_head(message)
            self.status = head.status
            self.allow_body = body_allowed(self.req.method, head.status)
            self.phase = Phase.STARTED
            return
        if kind == "http.response.body":
            if phase is Phase.TRAILERS:
                raise RuntimeError("http.response.body after the last body; expected "
                                   "'http.response.trailers'")
            self._write_body(body_bytes(message), bool(message.get("more_body", False)))
        elif kind == "http.response.trailers":
            if not self.head.trailers:  # type: ignore[union-attr]
                raise RuntimeError("http.response.trailers without 'trailers': True in "
                                   "http.response.start")
            if phase is not Phase.TRAILERS:
                raise RuntimeError("http.response.trailers before the last http.response.body")
            self._add_trailers(message)
        elif kind == "http.response.pathsend":
            if phase is not Phase.STARTED:
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
        """The head, framed (RFC 9112 section 6.3); ``body_len`` is the
        whole body's length when it comes in one message."""
        head = self.head
        assert head is not None
        self.phase = Phase.STREAMING
        req = self.req
        closing = (not self.keep_alive or head.close or self.proto.worker.draining
                   # Never said 100 Continue: the client may not send its body.
                   or (req.expect_continue and not self.continue_sent
                       and self.body_state is Body.RECEIVING))
        framing = b""
        if not self.allow_body:
            # HEAD and 304 may say how long the body would be; 1xx and 204 never.
            if head.content_length is not None and (req.method == b"HEAD" or head.status == 304):
                framing = b"content-length: %d\r\n" % head.content_length
        elif head.content_length is not None:
            self.length = head.content_length
            framing = b"content-length: %d\r\n" % self.length
        elif body_len is not None and not head.trailers:
            self.length = body_len
            framing = b"content-length: %d\r\n" % body_len
        elif req.http_version == b"1.1":
            self.chunked = True
            framing = b"transfer-encoding: chunked\r\n"
        else:
            closing = True  # HTTP/1.0, length unknown: close-delimited
        if closing:
            self.keep_alive = False
        return head_bytes(head, framing, closing)

    def _frame(self, body: bytes) -> bytes:
        """The bytes to write for a piece of body; with a Content-Length,
        never more than it announced."""
        if not self.allow_body or not body:
            return b""
        if self.chunked:
            self.sent += len(body)
            return chunk(body)
        length = self.length
        if length is not None and self.written + len(body) > length:
            # The extra bytes would be read as the next response.
            body = body[:length - self.written]
        self.written += len(body)
        self.sent += len(body)
        return body

    def _write_body(self, body: bytes, more: bool) -> None:
        head = self._head(None if more else len(body)) if self.phase is Phase.STARTED else b""
        framed = self._frame(body)
        data = head + framed
        if self.length is not None and len(framed) < len(body):
            self.proto.write(data)
            self.keep_alive = False
            raise RuntimeError(f"response body longer than its Content-Length ({self.length})")
        if more:
            if data:
                self.proto.write(data)
            return
        if self.head.trailers:  # type: ignore[union-attr]
            self.phase = Phase.TRAILERS
            self.proto.write(data)
            return
        self.proto.write(data + LAST_CHUNK if self.chunked else data)
        self._check_length()
        self.finish(Phase.COMPLETE)

    def _check_length(self) -> None:
        length = self.length
        if self.allow_body and length is not None and self.written < length:
            # The client waits for the rest: the connection must close.
            self.keep_alive = False
            raise RuntimeError(f"response body shorter than its Content-Length "
                               f"({self.written} of {length} bytes)")

    def _add_trailers(self, message: dict[str, Any]) -> None:
        self.trailer_lines += header_lines(message.get("headers", ()), "trailer")
        if message.get("more_trailers", False):
            return
        if self.chunked:
            # Sent only to a client that asked (TE: trailers); otherwise,
            # and when not chunked, the extension lets them be dropped.
            lines = self.trailer_lines if accepts_trailers(self.req) else []
            self.proto.write(b"0\r\n" + b"".join(lines) + b"\r\n")
        else:
            self._check_length()
        self.finish(Phase.COMPLETE)

    async def _pathsend(self, message: dict[str, Any]) -> None:
        path = message.get("path")
        if type(path) is not str or not os.path.isabs(path):
            raise ResponseError(f"http.response.pathsend needs an absolute path, got {path!r}")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = self._head(size)
            count = 0
            if self.allow_body and not self.chunked:
                count = size if self.length is None else min(size, self.length)
            self.proto.write(head)
            if self.chunked:  # HTTP/1.1 with trailers announced
                if size:
                    self.proto.write(b"%x\r\n" % size)
                    await self.proto.send_file(f, size)
                    self.proto.write(b"\r\n")
                    self.sent += size
            elif count:
                await self.proto.send_file(f, count)
                self.written += count
                self.sent += count
        if self.proto.closed:
            raise ClientDisconnected("the client disconnected")
        if self.head.trailers:  # type: ignore[union-attr]
            self.phase = Phase.TRAILERS
            return
        if self.chunked:
            self.proto.write(LAST_CHUNK)
        self._check_length()
        self.finish(Phase.COMPLETE)

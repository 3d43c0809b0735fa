"""ASGI WebSockets over wsproto's sans-I/O frame layer.

The upgrade request has been read by the shared request reader; this module
answers the handshake (RFC 6455 section 4.2) and hands every frame to
wsproto, which does the framing, masking and fragmentation.  What the app
sends is checked message by message against the ASGI WebSocket spec (2.4)
and the ``websocket.http.response`` denial extension.

A session is in one :class:`_State`::

    HANDSHAKE --accept--> OPEN --app closes--> CLOSING --peer's close--> CLOSED
        |                   \\--peer closes, protocol error, connection lost--> CLOSED
        \\--close, denial, app failure--> CLOSED (an HTTP response, no upgrade)

Bounds, from the handshake on: before the app accepts, what the client
sends is held raw, and reading pauses at ``_PENDING_HIGH_WATER``; after it,
reading pauses while received messages wait for the app beyond
``_INBOX_HIGH_WATER`` bytes or ``_INBOX_MESSAGES`` messages, and a message
larger than ``ws_max_size`` fails the connection with 1009.  Protocol
errors send the close frame RFC 6455 asks for (1002, 1007 for invalid
UTF-8, 1009 too big) before the connection closes, lingering so that the
client can read it.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import re
import traceback
from collections import deque
from typing import TYPE_CHECKING, Any

from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Message, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError

from ..http.asgi import (ClientDisconnected, body_bytes, build_head, head_bytes, header_pairs,
                         ws_close_args, ws_payload)
from ..http.framing import BodyFramer
from ..http.request import Request
from ..http.response import ResponseError, error_response

if TYPE_CHECKING:  # pragma: no cover
    from .asgi_protocol import HTTPProtocol

__all__ = ["upgrade_to_websocket", "WebSocketSession"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")
# Bytes held before the app accepts (a client should send nothing yet).
_PENDING_HIGH_WATER = 64 * 1024
# Received messages waiting for the app before reading pauses.
_INBOX_HIGH_WATER = 1 << 20
_INBOX_MESSAGES = 16
# How long our close frame waits for the peer's before the socket closes.
_CLOSE_WAIT = 2.0
# Handshake headers the server writes itself.
_RESERVED = frozenset({b"sec-websocket-accept", b"sec-websocket-protocol", b"upgrade",
                       b"connection", b"sec-websocket-extensions"})


class _State(enum.Enum):
    HANDSHAKE = "handshake"   # waiting for the app to accept or deny
    DENYING = "denying"       # websocket.http.response in progress
    OPEN = "open"
    CLOSING = "closing"       # our close frame sent; waiting for the peer's
    CLOSED = "closed"


_HANDSHAKE, _DENYING, _OPEN, _CLOSING, _CLOSED = (
    _State.HANDSHAKE, _State.DENYING, _State.OPEN, _State.CLOSING, _State.CLOSED)


def _header(req: Request, name: bytes) -> bytes | None:
    for n, v in req.headers:
        if n == name:
            return v
    return None


def upgrade_to_websocket(proto: "HTTPProtocol", req: Request) -> bool:
    """Take over ``proto``'s connection for a WebSocket; False if ``req`` is
    not a valid handshake (it is then served as plain HTTP)."""
    key = _header(req, b"sec-websocket-key")
    if (req.method != b"GET" or req.http_version != b"1.1" or key is None
            or _KEY.fullmatch(key) is None or _header(req, b"sec-websocket-version") != b"13"):
        return False
    WebSocketSession(proto, req, key).start()
    return True


class WebSocketSession:
    """One WebSocket connection and the app task serving it."""

    def __init__(self, proto: "HTTPProtocol", req: Request, key: bytes) -> None:
        self.proto = proto
        self.worker = proto.worker
        self.req = req
        self.accept_key = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self.conn = Connection(ConnectionType.SERVER)
        self.state = _HANDSHAKE
        self.pending = bytearray()  # raw bytes received before the accept
        self.inbox: deque[tuple[int, dict[str, Any]]] = deque()  # (size, message)
        self.inbox_bytes = 0
        self.waiter: asyncio.Future | None = None
        self.connect_sent = False
        self.close_code = 1006
        self.close_reason = ""
        self.fragments: list[Any] = []
        self.fragment_size = 0
        self.deny_head: Any = None
        self.deny_framer: BodyFramer | None = None
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_deadline: asyncio.TimerHandle | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        cfg = self.worker.cfg
        self.max_size = cfg.ws_max_size
        self.ping_interval = cfg.ws_ping_interval
        self.ping_timeout = cfg.ws_ping_timeout

    # -- wiring -----------------------------------------------------------------

    def start(self) -> None:
        proto = self.proto
        proto.ws = self
        leftover = proto.reader.take_buffered()
        worker = self.worker
        self.scope = proto.scope_for(self.req, websocket=True)
        worker.active += 1
        worker.heartbeat.set_current(self.req.raw_line)
        if worker.counters is not None:
            worker.counters.count_websocket(opened=True)
        worker.keep(proto.loop.create_task(self.run()))
        if leftover:
            self.feed(leftover)

    async def run(self) -> None:
        try:
            await self.worker.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            gone = self.state is _CLOSED or self.state is _CLOSING
            if not (isinstance(exc, ClientDisconnected)
                    or (gone and isinstance(exc, asyncio.CancelledError))):
                self._log_error("Exception in ASGI websocket application\n%s",
                                traceback.format_exc())
            self._end(app_failed=True)
        else:
            self._end(app_failed=False)
        finally:
            self.worker.active -= 1
            if self.worker.counters is not None:
                self.worker.counters.count_websocket(opened=False)
            self.worker.request_done()
            self._stop_pings()

    def _end(self, app_failed: bool) -> None:
        """The app returned (or raised): finish what it left undone."""
        state = self.state
        if state is _HANDSHAKE:
            if not app_failed:
                self._log_error("ASGI websocket callable returned without accepting or "
                                "closing the connection")
            self._deny_with(500)
        elif state is _DENYING:
            if not app_failed:
                self._log_error("ASGI websocket callable returned without completing its "
                                "websocket.http.response")
            if self.deny_framer is None:
                self._deny_with(500)
            else:
                self._set_closed(1006)
                self.proto.close()  # a truncated denial
        elif state is _OPEN:
            self.close(1011 if app_failed else 1000)

    def _log_error(self, msg: str, *args: Any) -> None:
        self.worker.log.error("%s: " + msg, self.req.raw_line.decode("latin-1"), *args)

    # -- from the client ------------------------------------------------------

    def feed(self, data: bytes) -> None:
        state = self.state
        if state is _OPEN or state is _CLOSING:
            self.conn.receive_data(data)
            self._read_events()
        elif state is _HANDSHAKE or state is _DENYING:
            # Before the accept nothing may be delivered: hold the bytes,
            # bounded, and parse them once accepted.
            self.pending += data
        self._sync_reading()

    def connection_lost(self) -> None:
        if self.state is not _CLOSED:
            self._set_closed(1006)
        if self.close_timer is not None:
            self.close_timer.cancel()

    def _read_events(self) -> None:
        conn = self.conn
        for event in conn.events():
            if isinstance(event, Message):
                if self.state is _CLOSING:
                    continue  # the app has closed: nothing more for it
                data = event.data
                self.fragment_size += (len(data) if type(data) is bytes or data.isascii()
                                       else len(data.encode("utf-8")))
                if self.fragment_size > self.max_size:
                    self._fail(1009, "message too big")
                    return
                self.fragments.append(data)
                if event.message_finished:
                    if isinstance(event, TextMessage):
                        msg = {"type": "websocket.receive", "text": "".join(self.fragments)}
                    else:
                        msg = {"type": "websocket.receive", "bytes": b"".join(self.fragments)}
                    self.fragments = []
                    self.inbox.append((self.fragment_size, msg))
                    self.inbox_bytes += self.fragment_size
                    self.fragment_size = 0
                    self._wake()
            elif isinstance(event, Ping):
                if conn.state is ConnectionState.OPEN:
                    self._write(conn.send(event.response()))
            elif isinstance(event, Pong):
                if self.pong_deadline is not None:
                    self.pong_deadline.cancel()
                    self.pong_deadline = None
            elif isinstance(event, CloseConnection):
                if conn.state is ConnectionState.REMOTE_CLOSING:
                    # The peer closes: answer, then close the socket (the
                    # server closes TCP first, RFC 6455 7.1.1).
                    self._write(conn.send(event.response()))
                    self._set_closed(event.code, event.reason or "")
                    self.proto.close()
                elif conn.state is ConnectionState.CLOSED:
                    # The peer answered our close.
                    self._set_closed(self.close_code)
                    self.proto.close()
                else:
                    # wsproto reports a protocol error as a close it did
                    # not receive: send that close ourselves.
                    self._fail(event.code, event.reason or "")
                return

    def _sync_reading(self) -> None:
        state = self.state
        if state is _HANDSHAKE or state is _DENYING:
            want = len(self.pending) < _PENDING_HIGH_WATER
        elif state is _OPEN:
            want = self.inbox_bytes < _INBOX_HIGH_WATER and len(self.inbox) < _INBOX_MESSAGES
        else:
            want = True
        if want:
            self.proto.resume_reading()
        else:
            self.proto.pause_reading()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- ASGI: receive ----------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while True:
            if self.inbox:
                size, msg = self.inbox.popleft()
                self.inbox_bytes -= size
                self._sync_reading()
                return msg
            if self.state is _CLOSED:
                return {"type": "websocket.disconnect", "code": self.close_code,
                        "reason": self.close_reason}
            self.waiter = self.proto.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None

    # -- ASGI: send ---------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise ResponseError(f"an ASGI message is a dict with a 'type', got "
                                f"{type(message).__name__}") from None
        state = self.state
        if state is _CLOSED or state is _CLOSING or self.proto.closed:
            raise ClientDisconnected("the WebSocket is closed")
        if state is _HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._deny_with(403)
            elif kind == "websocket.http.response.start":
                self.deny_head = build_head(message)
                self.state = _DENYING
            else:
                raise RuntimeError(f"expected 'websocket.accept', 'websocket.close' or "
                                   f"'websocket.http.response.start', got {kind!r}")
            return
        if state is _DENYING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"expected 'websocket.http.response.body', got {kind!r}")
            self._deny_body(body_bytes(message), bool(message.get("more_body", False)))
        elif kind == "websocket.send":
            data = ws_payload(message)
            self._write(self.conn.send(Message(data=data)))
        elif kind == "websocket.close":
            code, reason = ws_close_args(message)
            self.close(code, reason)
            return
        elif kind == "websocket.accept":
            raise RuntimeError("websocket.accept sent twice")
        else:
            raise RuntimeError(f"unexpected message {kind!r} on an open WebSocket")
        if self.proto.write_paused:
            await self.proto.drain()

    # -- handshake -------------------------------------------------------------------

    def _accept(self, message: dict[str, Any]) -> None:
        lines = [b"HTTP/1.1 101 Switching Protocols\r\n", b"upgrade: websocket\r\n",
                 b"connection: Upgrade\r\n", b"sec-websocket-accept: " + self.accept_key + b"\r\n"]
        sub = message.get("subprotocol")
        if sub is not None:
            if type(sub) is not str or sub not in self.scope["subprotocols"]:
                raise ResponseError(f"subprotocol {sub!r} was not offered by the client")
            lines.append(b"sec-websocket-protocol: " + sub.encode("ascii") + b"\r\n")
        for name, value in header_pairs(message.get("headers", ()), "websocket.accept"):
            if name.lower() in _RESERVED:
                raise ResponseError(f"websocket.accept header {name!r} is the server's to set "
                                    f"(use 'subprotocol' for sec-websocket-protocol)")
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        self.proto.write(b"".join(lines))
        self.state = _OPEN
        self._schedule_ping()
        # What the client sent before the accept, now as frames.
        pending = bytes(self.pending)
        self.pending = bytearray()
        if pending:
            self.conn.receive_data(pending)
            self._read_events()
        self._sync_reading()

    def _deny_body(self, body: bytes, more: bool) -> None:
        """The denial response (websocket.http.response), framed by the
        connection core like any response; the connection closes after it."""
        proto = self.proto
        framer = self.deny_framer
        if framer is None:
            head = self.deny_head
            framer = self.deny_framer = BodyFramer(b"GET", b"1.1", head.status,
                                                   head.content_length,
                                                   None if more else len(body))
            proto.write(head_bytes(head, framer.header, True))
        proto.write(framer.frame(body) if body else b"")
        if not more:
            proto.write(framer.end())
            self._set_closed(1006)
            proto.close()

    def _deny_with(self, status: int) -> None:
        self.proto.write(error_response(status))
        self._set_closed(1006)
        self.proto.close()

    # -- closing ----------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (1012 when the server shuts down)."""
        if self.state is _HANDSHAKE:
            self._deny_with(503 if code == 1012 else 403)
            return
        if self.state is not _OPEN:
            return
        self._write(self.conn.send(CloseConnection(code=code, reason=reason)))
        self.state = _CLOSING
        self.close_code = code
        self._stop_pings()
        self._wake()
        # Then the peer's close, or after a moment the socket closes anyway.
        self.close_timer = self.proto.loop.call_later(_CLOSE_WAIT, self._closing_timed_out)
        self._sync_reading()

    def _closing_timed_out(self) -> None:
        self.close_timer = None
        self._set_closed(self.close_code)
        self.proto.close()

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame with
        ``code``, then close, lingering so the client can read it."""
        if self.conn.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            try:
                self._write(self.conn.send(CloseConnection(code=code, reason=reason[:100])))
            except LocalProtocolError:
                pass
        self._set_closed(code, reason)
        self.proto.linger()

    def _set_closed(self, code: int, reason: str = "") -> None:
        if self.state is _CLOSED:
            return
        self.state = _CLOSED
        self.close_code = code
        self.close_reason = reason
        self._stop_pings()
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self._wake()

    def _write(self, data: bytes) -> None:
        if data:
            self.proto.write(data)

    # -- keep-alive pings -------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self.ping_interval > 0:
            self.ping_timer = self.proto.loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        if self.state is not _OPEN:
            return
        self._write(self.conn.send(Ping(payload=b"forkserve")))
        if self.ping_timeout > 0 and self.pong_deadline is None:
            self.pong_deadline = self.proto.loop.call_later(self.ping_timeout, self._pong_missing)
        self._schedule_ping()

    def _pong_missing(self) -> None:
        self.pong_deadline = None
        self.worker.log.info("WebSocket ping timeout: no pong in %.0fs; closing",
                             self.ping_timeout)
        self._fail(1011, "ping timeout")

    def _stop_pings(self) -> None:
        for timer in (self.ping_timer, self.pong_deadline):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_deadline = None

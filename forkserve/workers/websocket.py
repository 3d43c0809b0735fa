"""ASGI WebSockets over wsproto's sans-I/O frame layer.

The upgrade request has been read by the shared request reader; this module
answers the handshake (RFC 6455 section 4.2) and hands every frame to
wsproto, which does the framing, masking, fragmentation and close handshake.
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
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from ..http.asgi import ClientDisconnected, build_head, head_bytes
from ..http.request import Request
from ..http.response import check_header, error_response

if TYPE_CHECKING:  # pragma: no cover
    from .asgi_protocol import HTTPProtocol

__all__ = ["upgrade_to_websocket", "WebSocketSession"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")
# Incoming messages queued for the app before reading from the client pauses.
_QUEUE_HIGH_WATER = 16


class _State(enum.Enum):
    HANDSHAKE = "handshake"   # waiting for the app to accept or deny
    DENYING = "denying"       # websocket.http.response in progress
    OPEN = "open"
    CLOSED = "closed"


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
        self.state = _State.HANDSHAKE
        self.inbox: deque[dict[str, Any]] = deque()
        self.waiter: asyncio.Future | None = None
        self.connect_sent = False
        self.close_code: int | None = None
        self.fragments: list[Any] = []
        self.fragment_size = 0
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_deadline: asyncio.TimerHandle | None = None
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
        proto.loop.create_task(self.run())
        if leftover:
            self.feed(leftover)

    async def run(self) -> None:
        try:
            await self.worker.app(self.scope, self.receive, self.send)
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            if not isinstance(exc, OSError) or self.state is not _State.CLOSED:
                self.worker.log.error("Exception in ASGI websocket application (%s):\n%s",
                                      self.req.raw_line.decode("latin-1"), traceback.format_exc())
            if self.state is _State.HANDSHAKE:
                self._deny_with(500)
            elif self.state is _State.OPEN:
                self.close(1011)
        else:
            if self.state is _State.HANDSHAKE:
                self._deny_with(403)  # returned without accepting
            elif self.state is _State.OPEN:
                self.close(1000)
        finally:
            self.worker.active -= 1
            self.worker.request_done()
            self._stop_pings()

    # -- from the client ------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.state is _State.CLOSED:
            return
        if self.state is not _State.OPEN:
            # Frames before the accept wait in wsproto's buffer.
            self.conn.receive_data(data)
            return
        try:
            self.conn.receive_data(data)
            self._drain_events()
        except RemoteProtocolError as exc:
            self._fail(exc.event_hint.code if exc.event_hint is not None else 1002)

    def connection_lost(self) -> None:
        if self.state is not _State.CLOSED:
            self._set_closed(self.close_code or 1006)

    def _drain_events(self) -> None:
        for event in self.conn.events():
            if isinstance(event, Message):
                self.fragment_size += len(event.data)
                if self.fragment_size > self.max_size:
                    self._fail(1009)
                    return
                self.fragments.append(event.data)
                if event.message_finished:
                    if isinstance(event, TextMessage):
                        msg = {"type": "websocket.receive", "text": "".join(self.fragments)}
                    else:
                        msg = {"type": "websocket.receive", "bytes": b"".join(self.fragments)}
                    self.fragments = []
                    self.fragment_size = 0
                    self._deliver(msg)
            elif isinstance(event, Ping):
                self._write(self.conn.send(event.response()))
            elif isinstance(event, Pong):
                if self.pong_deadline is not None:
                    self.pong_deadline.cancel()
                    self.pong_deadline = None
            elif isinstance(event, CloseConnection):
                if self.conn.state is ConnectionState.REMOTE_CLOSING:
                    self._write(self.conn.send(event.response()))
                self._set_closed(event.code)
                self.proto.close()
                return

    def _deliver(self, msg: dict[str, Any]) -> None:
        self.inbox.append(msg)
        if len(self.inbox) > _QUEUE_HIGH_WATER:
            self.proto.pause_reading()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # -- ASGI ------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self.connect_sent:
            self.connect_sent = True
            return {"type": "websocket.connect"}
        while not self.inbox:
            if self.state is _State.CLOSED:
                return {"type": "websocket.disconnect", "code": self.close_code or 1006}
            self.waiter = self.proto.loop.create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        msg = self.inbox.popleft()
        if len(self.inbox) <= _QUEUE_HIGH_WATER // 2:
            self.proto.resume_reading()
        return msg

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        state = self.state
        if state is _State.HANDSHAKE:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._deny_with(403)
            elif kind == "websocket.http.response.start":
                self.state = _State.DENYING
                self.deny_head = build_head(message)
                self.deny_body: list[bytes] = []
            else:
                raise RuntimeError(f"expected websocket.accept or websocket.close, got {kind!r}")
            return
        if state is _State.DENYING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"expected websocket.http.response.body, got {kind!r}")
            self.deny_body.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                body = b"".join(self.deny_body)
                framing = b"content-length: %d\r\n" % len(body)
                self.proto.write(head_bytes(self.deny_head, framing, True) + body)
                self._set_closed(1006)
                self.proto.close()
            return
        if state is _State.CLOSED:
            raise ClientDisconnected("the WebSocket is closed")
        if kind == "websocket.send":
            text = message.get("text")
            data = text if text is not None else message.get("bytes")
            if data is None:
                raise RuntimeError("websocket.send needs text or bytes")
            self._write(self.conn.send(Message(data=data)))
            if self.proto.write_paused:
                await self.proto.drain()
        elif kind == "websocket.close":
            self.close(message.get("code", 1000) or 1000, message.get("reason") or "")
        else:
            raise RuntimeError(f"unexpected message {kind!r} on an open WebSocket")

    # -- handshake -------------------------------------------------------------------

    def _accept(self, message: dict[str, Any]) -> None:
        lines = [b"HTTP/1.1 101 Switching Protocols\r\n", b"upgrade: websocket\r\n",
                 b"connection: Upgrade\r\n", b"sec-websocket-accept: " + self.accept_key + b"\r\n"]
        sub = message.get("subprotocol")
        if sub is not None:
            if sub not in self.scope["subprotocols"]:
                raise RuntimeError(f"subprotocol {sub!r} was not offered by the client")
            lines.append(b"sec-websocket-protocol: " + sub.encode("ascii") + b"\r\n")
        for name, value in message.get("headers", ()):
            check_header(name, value)
            if name.lower() in (b"sec-websocket-accept", b"sec-websocket-protocol",
                                b"upgrade", b"connection"):
                continue
            lines.append(name + b": " + value + b"\r\n")
        lines.append(b"\r\n")
        self.proto.write(b"".join(lines))
        self.state = _State.OPEN
        self._schedule_ping()
        # Frames that arrived with or right after the handshake.
        try:
            self._drain_events()
        except RemoteProtocolError as exc:
            self._fail(exc.event_hint.code if exc.event_hint is not None else 1002)

    def _deny_with(self, status: int) -> None:
        self.proto.write(error_response(status))
        self._set_closed(1006)
        self.proto.close()

    # -- closing ----------------------------------------------------------------------

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the close handshake (1012 when the server shuts down)."""
        if self.state is _State.HANDSHAKE:
            self._deny_with(503 if code == 1012 else 403)
            return
        if self.state is not _State.OPEN:
            return
        try:
            self._write(self.conn.send(CloseConnection(code=code, reason=reason)))
        except LocalProtocolError:
            pass
        self._set_closed(code)
        # Give the peer a moment to answer the close, then drop the socket.
        self.proto.loop.call_later(2.0, self.proto.close)

    def _fail(self, code: int) -> None:
        self.close(code)
        self.proto.close()

    def _set_closed(self, code: int) -> None:
        if self.state is _State.CLOSED:
            return
        self.state = _State.CLOSED
        self.close_code = code
        self._stop_pings()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _write(self, data: bytes) -> None:
        if data:
            self.proto.write(data)

    # -- keep-alive pings -------------------------------------------------------------------

    def _schedule_ping(self) -> None:
        if self.ping_interval > 0:
            self.ping_timer = self.proto.loop.call_later(self.ping_interval, self._ping)

    def _ping(self) -> None:
        if self.state is not _State.OPEN:
            return
        self._write(self.conn.send(Ping(payload=b"forkserve")))
        if self.ping_timeout > 0 and self.pong_deadline is None:
            self.pong_deadline = self.proto.loop.call_later(self.ping_timeout, self._pong_missing)
        self._schedule_ping()

    def _pong_missing(self) -> None:
        self.pong_deadline = None
        self.worker.log.info("WebSocket ping timeout: no pong in %.0fs; closing",
                             self.ping_timeout)
        self._fail(1011)

    def _stop_pings(self) -> None:
        for timer in (self.ping_timer, self.pong_deadline):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_deadline = None

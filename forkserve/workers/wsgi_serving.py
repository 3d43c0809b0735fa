"""Serving WSGI exchanges on a connection: what the sync and the gevent
workers share.

Both workers hand one complete request head at a time to :meth:`WSGIServing.handle`,
which runs the app on the connection's socket with blocking-with-deadline
I/O (``sockio``: a non-blocking socket, waiting in ``select.poll``, which
gevent's monkey-patching makes cooperative), and returns the
:class:`Exchange`; :meth:`WSGIServing.after_exchange` then says what becomes
of the connection.  What differs between the workers is only how
connections wait for their next request: the sync worker's selector loop,
or one greenlet per connection.
"""

from __future__ import annotations

import socket
import struct
import time
import traceback
from typing import Any

from .. import tls
from ..heartbeat import Heartbeat
from ..http.connection import (Close, ConnState, Exchange, HTTPConnection, Policy,
                               error_status)
from ..http.proxy import NOT_FORWARDED, ProxyTrust
from ..http.proxy_protocol import NEED_MORE as PROXY_NEED_MORE, ProxyPreamble, ProxyProtocolError
from ..http.request import NEED_DATA, HTTPError, Limits, Request, RequestReader
from ..http.response import ResponseError, error_response
from ..http.wsgi import (ErrorStream, FileWrapper, WSGIInput, WSGIResponse, base_environ,
                         build_environ)
from .sockio import ClientGone, ClientTimeout, recv_some, send_all, sendfile_all

__all__ = ["WSGIServing", "Connection"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST
_monotonic = time.monotonic
_CLOSED = ConnState.CLOSED
_CLIENT_GONE, _BAD_BODY = Close.CLIENT_GONE, Close.BAD_BODY


class Connection(HTTPConnection):
    """A client connection of this worker: the core's state plus the socket."""

    __slots__ = ("sock", "peer", "client", "reader", "progress", "request", "registered",
                 "forwarded", "remote", "preamble", "tls_wait")

    def __init__(self, sock: socket.socket, peer: Any, reader: RequestReader,
                 policy: Policy, now: float) -> None:
        super().__init__(policy, now)
        self.sock = sock
        self.peer = peer
        self.client = peer[0] if peer else "unix"
        self.reader = reader
        self.progress = 0.0     # last progress while in the app, monotonic
        self.request: Request | None = None
        self.registered = False  # in the selector
        self.forwarded = NOT_FORWARDED  # what a trusted proxy said of this request
        # The client's address as the app and the access log see it: the
        # peer's, or what its PROXY protocol header said (``peer`` stays
        # the proxy's, whose trust decides the proxy headers).
        self.remote = peer
        self.preamble: ProxyPreamble | None = None  # until the PROXY header is read
        # The selector event the TLS handshake waits for; 0 once it is
        # done, or without TLS.
        self.tls_wait = 0

    def close(self) -> None:
        self.state = _CLOSED
        try:
            self.sock.close()
        except OSError:
            pass


class WSGIServing:
    """What a WSGI worker needs to serve exchanges; mixed into a
    :class:`~forkserve.workers.base.Worker` subclass, which calls
    :meth:`setup_wsgi` from its ``__init__``."""

    # Provided by Worker.
    cfg: Any
    app: Any
    log: Any
    heartbeat: Heartbeat
    listeners: list
    beats_per_exchange: bool

    def setup_wsgi(self, multithread: bool) -> None:
        """Read the settings the exchanges need, once, at fork."""
        cfg = self.cfg
        # Zero means no limit: a day stands in for it.
        self.body_timeout = cfg.body_timeout or 86400.0
        self.write_timeout = cfg.write_timeout or 86400.0
        self.limits = Limits.from_config(cfg)
        self.policy = Policy.from_config(cfg)
        name, port = self._server_name()
        self.tls = tls.enabled(cfg)
        self.suppress_ragged_eofs = cfg.suppress_ragged_eofs
        self.environ_base = base_environ(name, port, multithread, cfg.root_path.rstrip("/"),
                                         ErrorStream(self.log), "https" if self.tls else "http")
        self.proxy = ProxyTrust(cfg.forwarded_allow_ips, cfg.secure_scheme_headers,
                                cfg.forwarder_headers)
        self.proxy_protocol = cfg.proxy_protocol
        self.proxy_senders = ProxyTrust(cfg.proxy_allow_ips)

    def _server_name(self) -> tuple[str, str]:
        for lst in self.listeners:
            if lst.sock.family in (socket.AF_INET, socket.AF_INET6):
                host, port = lst.sock.getsockname()[:2]
                return host, str(port)
        return "localhost", "80"

    def expect_preamble(self, conn: Connection) -> None:
        """With ``proxy_protocol``, a new connection's first bytes go
        through a PROXY header reader (:meth:`read_preamble`)."""
        if self.proxy_protocol != "off":
            peer = conn.peer
            conn.preamble = ProxyPreamble(self.proxy_protocol,
                                          self.proxy_senders.trusts(peer[0] if peer else None))

    def read_preamble(self, conn: Connection, data: bytes) -> bytes | None:
        """Pass a connection's first bytes through its PROXY header reader:
        the bytes after the header, or None while it is incomplete.  The
        header's client becomes the connection's.  ProxyProtocolError (its
        ``status`` answers it) if the header is refused.  It arrives within
        the head's header_timeout, like the request after it."""
        try:
            result = conn.preamble.feed(data)  # type: ignore[union-attr]
        except ProxyProtocolError as exc:
            self.log.debug("Refused connection from %s: %s", conn.peer, exc)
            conn.preamble = None
            raise
        if result is PROXY_NEED_MORE:
            return None
        header, rest = result  # type: ignore[misc]
        conn.preamble = None
        if header is not None and header.source is not None:
            conn.remote = header.source
            conn.client = header.source[0]
        return rest

    def resolve_forwarded(self, conn: Connection, req: Request) -> int:
        """What trusted proxy headers say of ``req``, kept on ``conn`` for
        the exchange: 0, or the status refusing the request when they
        contradict each other (gunicorn's 400)."""
        peer = conn.peer
        try:
            conn.forwarded = self.proxy.resolve(peer[0] if peer else None, req.headers)
        except HTTPError as exc:
            self.log.debug("Refused request from %s: %s", peer, exc)
            return exc.status
        return 0

    def after_exchange(self, conn: Connection, ex: Exchange | None) -> ConnState:
        """What becomes of ``conn`` after an exchange (None: it failed
        outright): kept (IDLE, or HEAD with the next request buffered, its
        reader reset for it), LINGER (the client may still be sending a
        body: shut our side and drop its bytes for a moment, so that it
        reads the response instead of a reset) or CLOSED (close now)."""
        conn.request = None
        reader = conn.reader
        if ex is not None and conn.finish(ex, _monotonic(), reader.buffered > 0):
            try:
                reader.start_next()
                return conn.state
            except RuntimeError:
                # Not reachable while every reader error reaches the
                # exchange; if one ever does not, close, never crash.
                self.log.error("Request reader not done after an exchange; closing")
        if ex is not None and ex.close is not _CLIENT_GONE and (
                ex.close is _BAD_BODY or _body_left(reader)):
            return ConnState.LINGER
        return _CLOSED

    def handle(self, conn: Connection, req: Request) -> Exchange:
        """Serve one request; the exchange says whether the connection may
        be kept alive."""
        sock = conn.sock
        body_timeout = self.body_timeout
        write_timeout = self.write_timeout
        inline = self.beats_per_exchange
        beat = self.heartbeat.beat
        start = _monotonic()
        ex = conn.begin(req, start, conn.client)
        ex.peer = conn.remote  # the PROXY header's client, as REMOTE_ADDR
        grace = start + self.policy.rate_grace

        def progress(n: int) -> None:
            ex.moved += n
            now = _monotonic()
            if now <= grace or ex.progressing(now):
                conn.progress = now
                if inline:
                    beat()

        def send(data: bytes) -> None:
            send_all(sock, data, write_timeout, progress)

        reader = conn.reader

        def fill() -> bytes:
            while True:
                try:
                    event = reader.next_event()
                except HTTPError as exc:
                    # The reader is dead now: whatever the app makes of
                    # this (Django and Flask answer it), the connection
                    # closes after the response.
                    ex.body_error(exc)
                    raise
                if type(event) is bytes:
                    ex.received += len(event)
                    return event
                if event is NEED_DATA:
                    if ex.continue_pending:
                        ex.continue_pending = False
                        send(_CONTINUE)
                    reader.feed(recv_some(sock, body_timeout, progress))
                    continue
                # EndOfMessage (trailers are not part of WSGI): the whole
                # body is in, so no 100 Continue is owed any more.
                ex.continue_pending = False
                return b""

        resp = WSGIResponse(send, ex)
        wsgi_input = WSGIInput(fill)
        peer = conn.peer
        forwarded = conn.forwarded
        environ = build_environ(self.environ_base, req, wsgi_input, conn.remote, forwarded)
        ex.environ = environ
        if forwarded.client is not None:
            ex.client = forwarded.client
        result: Any = None
        try:
            if not self.begin_request(ex):
                raise _HookFailed()
            result = self.app(environ, resp.start_response)
            self._write_result(resp, result, sock, write_timeout, progress, ex)
            resp.finish()
        except ClientGone:
            ex.close_because(Close.CLIENT_GONE)
        except ClientTimeout:
            ex.close_because(Close.CLIENT_GONE)
            # A client that stopped reading: reset the connection, so the
            # kernel drops the unsent response instead of trickling it out.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except Exception as exc:
            if isinstance(exc, HTTPError):
                # The body was malformed while the app read it.
                self.log.debug("Bad request body from %s: %s", peer, exc)
            elif not isinstance(exc, _HookFailed):
                self.log.error("Error handling request %s:\n%s",
                               req.raw_line.decode("latin-1"), traceback.format_exc())
            ex.close_because(Close.APP_ERROR)
            if not resp.head_sent:
                status = error_status(exc)
                ex.set_status(status)
                ex.response_headers = []
                try:
                    send(error_response(status, req.http_version))
                except (ClientGone, ClientTimeout):
                    pass
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    self.log.error("Error closing the response iterable:\n%s",
                                   traceback.format_exc())
        if ex.close is None and reader.in_body:
            self._drain_body(ex, reader, sock, progress)
        self.end_exchange(ex)
        return ex

    def _drain_body(self, ex: Exchange, reader: RequestReader, sock: socket.socket,
                    progress) -> None:
        """Read and drop the body the app left unread, within the policy's
        bounds in bytes and time; past them the connection closes."""
        policy = self.policy
        # Without our "100 Continue" the client may never send it.
        if ex.continue_pending or not policy.worth_discarding(reader):
            ex.close_because(Close.BODY_UNREAD)
            return
        limit = policy.drain_bytes
        deadline = _monotonic() + policy.drain_time
        total = 0
        while True:
            try:
                event = reader.next_event()
            except HTTPError as exc:
                ex.body_error(exc)
                return
            if type(event) is bytes:
                total += len(event)
                if total > limit:
                    ex.close_because(Close.BODY_UNREAD)
                    return
                continue
            if event is not NEED_DATA:
                return  # EndOfMessage: the connection can be reused
            left = deadline - _monotonic()
            if left <= 0:
                ex.close_because(Close.BODY_UNREAD)
                return
            try:
                reader.feed(recv_some(sock, left, progress))
            except ClientTimeout:
                ex.close_because(Close.BODY_UNREAD)
                return
            except ClientGone:
                ex.close_because(Close.CLIENT_GONE)
                return

    def _write_result(self, resp: WSGIResponse, result: Any, sock: socket.socket,
                      write_timeout: float, progress, ex: Exchange) -> None:
        if isinstance(result, FileWrapper) and not self.tls:  # no sendfile through TLS
            plan = resp.sendfile_plan(result)
            if plan is not None:
                fd, offset, count = plan
                try:
                    sent = sendfile_all(sock, fd, offset, count, write_timeout, progress)
                except OSError as exc:
                    ex.sent += getattr(exc, "written", 0)
                    raise
                ex.sent += sent
                if sent < count:
                    ex.close_because(Close.FRAMING)  # the file shrank
                return
        elif (type(result) in (list, tuple) and len(result) == 1
              and not resp.head_sent and resp.content_length is None):
            # The common case: a whole body in one piece.  Frame it with a
            # Content-Length instead of chunking it.
            body = result[0]
            if not isinstance(body, (bytes, bytearray)):
                raise ResponseError(f"response body must be bytes, got {type(body).__name__}")
            resp.write(body, body_length=len(body))
            return
        write = resp.write
        for data in result:
            write(data)


def _body_left(reader: RequestReader) -> bool:
    """Whether part of the current request's body is still unread."""
    if not reader.in_body:
        return False
    try:
        event = reader.next_event()
    except HTTPError:
        return True
    return event is NEED_DATA or type(event) is bytes


class _HookFailed(Exception):
    """pre_request failed (already logged): answer 500, skip the app."""

"""The sync worker: WSGI apps behind a small event loop.

One selector waits on the listening sockets, on idle keep-alive connections
and on connections whose request head is still arriving.  A connection is
handed to the application only once its whole head is in, so idle and slow
clients cost a file descriptor, not a thread.  With ``threads = 1`` the app
runs in the loop's own thread (one request at a time, like gunicorn's sync
worker, but with keep-alive); with ``threads = N`` it runs in a pool of N
threads while the loop keeps accepting (like gunicorn's gthread).

Liveness: the loop beats the heartbeat on every turn.  A request that makes
no progress (no app return, no bytes read or written) for ``timeout``
seconds stops the beats, and the arbiter kills the worker.
"""

from __future__ import annotations

import errno
import os
import queue
import selectors
import signal
import socket
import struct
import threading
import time
import traceback
from typing import Any

from ..heartbeat import WorkerState
from ..http.proxy import ProxyTrust
from ..http.request import NEED_DATA, HTTPError, Limits, Request, RequestReader
from ..http.response import ResponseError, error_response
from ..http.wsgi import FileWrapper, WSGIInput, WSGIResponse, base_environ, build_environ
from .base import Worker
from .sockio import ClientGone, ClientTimeout, recv_some, send_all, sendfile_all

__all__ = ["SyncWorker"]

_ACCEPT = object()
_WAKE = object()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Unread request body the worker will read and drop to keep a connection
# alive; beyond this it closes the connection instead.
_DRAIN_LIMIT = 1 << 20
# On graceful stop, how long a new connection may take to send its first
# request before it is closed.
_FIRST_REQUEST_GRACE = 2.0
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST
# How long a connection refused with an error is drained before it closes.
_LINGER = 2.0


def limits_from(cfg: Any) -> Limits:
    """The request reader's limits from settings (0 means the head cap)."""
    head = 65536
    return Limits(
        request_line=cfg.limit_request_line or head,
        fields=cfg.limit_request_fields or 32768,
        field_size=cfg.limit_request_field_size or head,
        head=max(head, cfg.limit_request_line + cfg.limit_request_field_size + 4),
        body=cfg.limit_request_body,
    )


class Connection:
    """A client connection between requests (idle, or its head arriving)."""

    __slots__ = ("sock", "peer", "reader", "deadline", "progress", "request", "served",
                 "registered", "lingering")

    def __init__(self, sock: socket.socket, peer: Any, reader: RequestReader) -> None:
        self.sock = sock
        self.peer = peer
        self.reader = reader
        self.deadline = 0.0     # idle or header deadline, monotonic
        self.progress = 0.0     # last progress while in the app, monotonic
        self.request: Request | None = None
        self.served = 0
        self.registered = False  # in the selector
        self.lingering = False   # answered with an error; draining before close

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class SyncWorker(Worker):
    """WSGI worker; see the module docstring."""

    kind = "sync"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.threads = cfg.threads
        self.keepalive = cfg.keepalive
        # Zero means no limit: a day stands in for it.
        self.body_timeout = cfg.body_timeout or 86400.0
        self.write_timeout = cfg.write_timeout or 86400.0
        self.limits = limits_from(cfg)
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}     # waiting in the loop, by fd
        self.busy: dict[int, Connection] = {}      # in the app, by fd
        self.done: queue.SimpleQueue[tuple[Connection, bool]] = queue.SimpleQueue()
        self.jobs: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.accepting = False
        name, port = self._server_name()
        self.environ_base = base_environ(name, port, self.threads > 1, cfg.root_path.rstrip("/"))
        self.proxy = ProxyTrust(cfg.forwarded_allow_ips)
        # Read once: Config attribute access is a lookup, and this is the
        # hot path.
        self.header_timeout = cfg.header_timeout
        self.pre_request = cfg.hooks.get("pre_request")
        self.post_request = cfg.hooks.get("post_request")

    def _server_name(self) -> tuple[str, str]:
        for lst in self.listeners:
            if lst.sock.family in (socket.AF_INET, socket.AF_INET6):
                host, port = lst.sock.getsockname()[:2]
                return host, str(port)
        return "localhost", "80"

    # -- the loop --------------------------------------------------------

    def serve(self) -> None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r, self.wake_w = rfd, wfd
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        self.selector.register(rfd, selectors.EVENT_READ, _WAKE)
        for lst in self.listeners:
            lst.sock.setblocking(False)
        self._set_accepting(True)
        pool = [threading.Thread(target=self._thread_main, daemon=True,
                                 name=f"forkserve-{i}") for i in range(self.threads if self.threads > 1 else 0)]
        for t in pool:
            t.start()

        beat = self.heartbeat.beat
        select = self.selector.select
        while self.alive:
            self._beat(beat)
            for key, _ in select(self._select_timeout()):
                data = key.data
                if data is _ACCEPT:
                    self._accept(key.fileobj)
                elif data is _WAKE:
                    self._drain_wake()
                else:
                    self._on_readable(data)
            self._expire()
            self.maintenance()

        self._shutdown(pool)

    def _beat(self, beat) -> None:
        if not self.busy:
            beat()
            return
        # Threaded: beat only while every in-flight request is progressing,
        # so a stuck request still trips the arbiter's timeout.
        oldest = min(c.progress for c in list(self.busy.values()))
        if self.cfg.timeout <= 0 or time.monotonic() - oldest < self.cfg.timeout:
            beat()
        else:
            for c in list(self.busy.values()):
                if c.progress == oldest and c.request is not None:
                    self.heartbeat.set_current(c.request.raw_line)

    def _select_timeout(self) -> float:
        timeout = 1.0
        if self.cfg.timeout > 0:
            timeout = min(timeout, self.cfg.timeout / 4)
        return timeout

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        self.accepting = on
        for lst in self.listeners:
            if on:
                self.selector.register(lst.sock, selectors.EVENT_READ, _ACCEPT)
            else:
                self.selector.unregister(lst.sock)

    def _accept(self, lsock: socket.socket) -> None:
        limit = self.cfg.worker_connections
        for _ in range(64):
            if len(self.conns) + len(self.busy) >= limit:
                self._set_accepting(False)
                return
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors: stop accepting for a moment rather
                    # than spin on a listener that stays readable.
                    self.log.warning("accept() failed: %s; pausing accepts", exc.strerror)
                    self._set_accepting(False)
                    self._resume_at = time.monotonic() + 0.5
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                peer = None
            conn = Connection(sock, peer, RequestReader(self.limits))
            conn.deadline = time.monotonic() + self.cfg.header_timeout
            fd = sock.fileno()
            self.conns[fd] = conn
            # Most clients send the request with the connection: read now,
            # and register with the selector only if the connection is still
            # waiting afterwards (a Connection: close exchange never is).
            self._on_readable(conn)
            if not conn.registered and self.conns.get(fd) is conn:
                self.selector.register(sock, selectors.EVENT_READ, conn)
                conn.registered = True

    _resume_at = 0.0

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                conn, keep = self.done.get_nowait()
            except queue.Empty:
                break
            self.busy.pop(conn.sock.fileno(), None)
            if self._finish_exchange(conn, keep):
                self.conns[conn.sock.fileno()] = conn
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
                conn.registered = True
                self._next_request(conn)

    def _on_readable(self, conn: Connection) -> None:
        if conn.lingering:
            self._linger(conn)
            return
        reader = conn.reader
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self._close(conn)
            return
        if data and reader.idle:
            # First byte of a new request: the whole head must arrive within
            # header_timeout from now.
            conn.deadline = time.monotonic() + self.cfg.header_timeout
        reader.feed(data)
        self._next_request(conn)

    def _next_request(self, conn: Connection) -> None:
        """Serve every complete request buffered on ``conn``, in order
        (pipelining), until it needs more bytes or is closed."""
        while True:
            try:
                event = conn.reader.next_event()
            except HTTPError as exc:
                self.log.debug("Refused request from %s: %s", conn.peer, exc)
                self._refuse(conn, exc.status)
                return
            if event is NEED_DATA:
                return
            if not isinstance(event, Request):
                # ConnectionClosed: the client is done.
                self._close(conn)
                return
            conn.request = event
            conn.progress = time.monotonic()
            if self.threads > 1:
                self._submit(conn)
                return
            heartbeat = self.heartbeat
            heartbeat.set_current(event.raw_line)
            keep = self.handle(conn, event)
            heartbeat.set_current(b"")
            if not self._finish_exchange(conn, keep):
                return

    def _submit(self, conn: Connection) -> None:
        """Hand ``conn`` to the thread pool; the loop forgets it meanwhile."""
        fd = conn.sock.fileno()
        del self.conns[fd]
        if conn.registered:
            self.selector.unregister(conn.sock)
            conn.registered = False
        self.busy[fd] = conn
        self.jobs.put(conn)

    def _finish_exchange(self, conn: Connection, keep: bool) -> bool:
        """After a response: close, or wait for the next request.  True if
        the connection stays open."""
        conn.request = None
        conn.served += 1
        if not keep or not self.alive:
            self._close(conn)
            return False
        conn.reader.start_next()
        if conn.reader.buffered:
            conn.deadline = time.monotonic() + self.header_timeout
        else:
            conn.deadline = time.monotonic() + self.keepalive
        return True

    def _refuse(self, conn: Connection, status: int) -> None:
        """Answer with an error and close, reading no further request.

        The close lingers (as nginx's does): shut our side, then read and
        drop what the client is still sending for a moment.  Closing with
        unread bytes would make the kernel send a reset, and the client
        could lose the very response that tells it what went wrong.
        """
        try:
            conn.sock.send(error_response(status))
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.lingering = True
        conn.deadline = time.monotonic() + _LINGER
        fd = conn.sock.fileno()
        self.conns[fd] = conn
        if not conn.registered:
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
            conn.registered = True

    def _linger(self, conn: Connection) -> None:
        """Read and drop bytes on a closing connection until EOF."""
        try:
            while conn.sock.recv(65536):
                pass
        except BlockingIOError:
            return
        except OSError:
            pass
        self._close(conn)

    def _close(self, conn: Connection) -> None:
        self.conns.pop(conn.sock.fileno(), None)
        if conn.registered:
            conn.registered = False
            try:
                self.selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
        conn.close()
        if not self.accepting and self.alive and time.monotonic() >= self._resume_at:
            self._set_accepting(True)

    def _expire(self) -> None:
        now = time.monotonic()
        if not self.accepting and self.alive and now >= self._resume_at and (
                len(self.conns) + len(self.busy) < self.cfg.worker_connections):
            self._set_accepting(True)
        expired = [c for c in self.conns.values() if c.deadline <= now]
        for conn in expired:
            if conn.lingering:
                self._close(conn)
            elif conn.reader.idle:
                # This worker may have been busy in the app past the
                # deadline while a request sat unread in the kernel: read
                # before deciding the client is idle.
                fd = conn.sock.fileno()
                self._on_readable(conn)
                if self.conns.get(fd) is conn and conn.reader.idle and conn.deadline <= now:
                    self._close(conn)
            else:
                # Slow head (slowloris): tell the client why, then close.
                self._refuse(conn, 408)

    def _thread_main(self) -> None:
        while True:
            conn = self.jobs.get()
            if conn is None:
                return
            keep = False
            try:
                keep = self.handle(conn, conn.request)  # type: ignore[arg-type]
            finally:
                self.done.put((conn, keep))
                try:
                    os.write(self.wake_w, b"\0")
                except BlockingIOError:
                    pass  # the pipe is full: the loop is already awake

    def _shutdown(self, pool: list[threading.Thread]) -> None:
        """Drain: no new connections; finish what is in flight.

        A connection that has not sent its first request yet gets a moment
        to send it (clients retry a request on a reused connection that the
        server closed, but not on a fresh one).  An idle keep-alive
        connection is closed at once, unless its next request is already
        waiting in the kernel; that one is served, with Connection: close.
        """
        self.heartbeat.set_state(WorkerState.STOPPING)
        self._set_accepting(False)
        for lst in self.listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if conn.served and conn.reader.idle:
                self._on_readable(conn)
                if conn.sock.fileno() in self.conns and conn.reader.idle:
                    self._close(conn)
            else:
                conn.deadline = min(conn.deadline, now + _FIRST_REQUEST_GRACE)
        deadline = now + self.cfg.graceful_timeout
        beat = self.heartbeat.beat
        while (self.conns or self.busy) and time.monotonic() < deadline:
            self._beat(beat)
            for key, _ in self.selector.select(0.2):
                if key.data is _WAKE:
                    self._drain_wake()
                elif key.data is not _ACCEPT:
                    self._on_readable(key.data)
            self._expire()
        for _ in pool:
            self.jobs.put(None)
        signal.set_wakeup_fd(-1)

    # -- one exchange ------------------------------------------------------

    def handle(self, conn: Connection, req: Request) -> bool:
        """Serve one request; True if the connection may be kept alive."""
        sock = conn.sock
        body_timeout = self.body_timeout
        write_timeout = self.write_timeout
        inline = self.threads == 1
        beat = self.heartbeat.beat

        def progress() -> None:
            conn.progress = time.monotonic()
            if inline:
                beat()

        def send(data: bytes) -> None:
            send_all(sock, data, write_timeout, progress)

        state = {"continue_sent": False}
        reader = conn.reader

        def fill() -> bytes:
            while True:
                event = reader.next_event()
                if type(event) is bytes:
                    return event
                if event is NEED_DATA:
                    if req.expect_continue and not state["continue_sent"]:
                        state["continue_sent"] = True
                        send(_CONTINUE)
                    reader.feed(recv_some(sock, body_timeout, progress))
                    continue
                return b""  # EndOfMessage (trailers are not part of WSGI)

        keep_alive = req.keep_alive and self.alive and self.keepalive > 0
        resp = WSGIResponse(send, req, keep_alive)
        wsgi_input = WSGIInput(fill)
        peer = conn.peer
        forwarded = self.proxy.resolve(peer[0] if peer else None, req.headers)
        environ = build_environ(self.environ_base, req, wsgi_input, peer, forwarded)
        start = time.monotonic()
        result: Any = None
        try:
            if self.pre_request is not None:
                self.pre_request(self, req)
            result = self.app(environ, resp.start_response)
            self._write_result(resp, result, sock, write_timeout, progress)
            resp.finish()
        except ClientGone:
            resp.must_close = True
        except ClientTimeout:
            resp.must_close = True
            # A client that stopped reading: reset the connection, so the
            # kernel drops the unsent response instead of trickling it out.
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except Exception as exc:
            resp.must_close = True
            if isinstance(exc, HTTPError):
                # The body was malformed while the app read it.
                status = exc.status
                self.log.debug("Bad request body from %s: %s", peer, exc)
            else:
                status = 500
                self.log.error("Error handling request %s:\n%s",
                               req.raw_line.decode("latin-1"), traceback.format_exc())
            if not resp.head_sent:
                resp.status_code = status
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
        keep = not resp.close_after
        if keep and reader.in_body:
            # The app did not read the whole body.  If we never said
            # "100 Continue" the client may not send it at all.
            if req.expect_continue and not state["continue_sent"]:
                keep = False
            else:
                try:
                    keep = wsgi_input.drain(_DRAIN_LIMIT)
                except (HTTPError, ClientGone, ClientTimeout):
                    keep = False
        self.request_done()
        if self.post_request is not None:
            try:
                self.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("post_request hook failed")
        if self.access_log.enabled:
            self.access_log.log_exchange(req, environ["REMOTE_ADDR"] or "unix", resp.status_code,
                                         resp.sent, resp.headers, start)
        return keep

    def _write_result(self, resp: WSGIResponse, result: Any, sock: socket.socket,
                      write_timeout: float, progress) -> None:
        if isinstance(result, FileWrapper):
            plan = resp.sendfile_plan(result)
            if plan is not None:
                fd, offset, count = plan
                sent = sendfile_all(sock, fd, offset, count, write_timeout, progress)
                if sent < count:
                    resp.must_close = True
                return
        elif (type(result) in (list, tuple) and len(result) == 1
              and not resp.head_sent and resp.content_length is None):
            # The common case: a whole body in one piece.  Frame it with a
            # Content-Length instead of chunking it.
            body = result[0]
            if not isinstance(body, (bytes, bytearray)):
                raise ResponseError(f"response body must be bytes, got {type(body).__name__}")
            resp.write(body, body_len_hint=len(body))
            return
        write = resp.write
        for data in result:
            write(data)

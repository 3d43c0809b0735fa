"""The sync worker: WSGI apps behind a small event loop.

One selector waits on the listening sockets, on idle keep-alive connections
and on connections whose request head is still arriving.  A connection is
handed to the application only once its whole head is in, so idle and slow
clients cost a file descriptor, not a thread.  With ``threads = 1`` the app
runs in the loop's own thread (one request at a time, like gunicorn's sync
worker, but with keep-alive); with ``threads = N`` it runs in a pool of N
threads while the loop keeps accepting (like gunicorn's gthread).

The worker only moves bytes and calls the app: framing, keep-alive, error
responses, draining and the end of an exchange are the connection core's
(``http/framing.py``, ``http/connection.py``, ``Worker.end_exchange``).

Liveness: the loop beats the heartbeat on every turn, and every completed
exchange beats (a run of pipelined requests or a burst of accepts served
back to back is progress).  While an exchange waits on its client, bytes
moving count as progress only at a real rate (``Exchange.progressing``): a
body trickled a byte at a time does not keep the worker alive.  A request
that makes no progress for ``timeout`` seconds stops the beats, and the
arbiter kills the worker.

Bounds on clients: a request head must arrive within ``header_timeout``;
each stall of a body read or a response write is bounded by
``body_timeout``/``write_timeout``; an unread request body is drained after
the response for at most 1 MiB and 1 s, else the connection is closed (a
lingering close, so the client still reads the response); at
``worker_connections`` the connection waiting longest (idle, or sending its
head slowly) makes room for a new one.

TLS (``certfile``): each accepted socket is wrapped, and the loop does the
handshake without blocking, waiting on the selector for whichever way
OpenSSL asks; the connection is FRESH meanwhile, so the handshake and the
wait for the first request byte share one bound (``header_timeout`` from the
accept, as a fresh connection always has), and a client that stalls, sends
garbage or plaintext HTTP costs a descriptor until then, never the loop.
Responses go through the same reads and writes (``sockio``), without
sendfile.

Graceful stop (TERM, recycling): no accept() once the flag is seen, even for
listeners already reported readable; exchanges in flight finish; idle
keep-alive connections stay open until a request arrives (answered with
``Connection: close``) or their keep-alive timeout ends, within
``graceful_timeout``.
"""

from __future__ import annotations

import errno
import os
import queue
import selectors
import signal
import socket
import ssl
import threading
import time
from typing import Any

from ..heartbeat import WorkerState
from ..http.connection import ConnState, Exchange, Expiry, eviction_candidates
from ..http.proxy_protocol import ProxyProtocolError
from ..http.request import NEED_DATA, HTTPError, Request, RequestReader
from ..http.response import error_response
from .base import Worker
from .sockio import WOULD_BLOCK
from .wsgi_serving import Connection, WSGIServing

__all__ = ["SyncWorker"]

_ACCEPT = object()
# Connections taken per readiness of a listening socket.
_ACCEPT_BATCH = 64
_WAKE = object()
_monotonic = time.monotonic
# Enum members as constants on the per-request paths (a class lookup each
# time costs as much as a small function call).
_HEAD, _LINGER = ConnState.HEAD, ConnState.LINGER


class SyncWorker(WSGIServing, Worker):
    """WSGI worker; see the module docstring."""

    kind = "sync"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.threads = cfg.threads
        # With a thread pool the loop beats, judging every exchange in
        # flight (see _beat): one finishing must not hide one stuck.
        self.beats_per_exchange = self.threads == 1
        self.setup_wsgi(multithread=self.threads > 1)
        if self.threads > 1:
            self.counter_lock = threading.Lock()
        self.max_connections = cfg.worker_connections
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}     # waiting in the loop, by fd
        self.busy: dict[int, Connection] = {}      # in the app, by fd
        self.done: queue.SimpleQueue[tuple[Connection, Exchange | None]] = queue.SimpleQueue()
        self.jobs: queue.SimpleQueue[Connection | None] = queue.SimpleQueue()
        self.accepting = False

    def open_connections(self) -> int:
        return len(self.conns) + len(self.busy)

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
                    # TERM may have arrived while serving an earlier event
                    # of this very batch: then no more accepts at all.
                    if self.alive:
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
        if self.cfg.timeout <= 0 or _monotonic() - oldest < self.cfg.timeout:
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
        limit = self.max_connections
        victims: list[Connection] = []
        for _ in range(_ACCEPT_BATCH):
            if not self.alive:
                return
            if len(self.conns) + len(self.busy) >= limit:
                # Full: make room by closing the connection that has waited
                # longest on its client, so slow or idle clients cannot
                # starve a fresh one; stop accepting only if every
                # connection is in an exchange.  The candidates are chosen
                # once for the batch (a flood would otherwise scan every
                # connection for each accept).
                while victims and not victims[-1].evictable:
                    victims.pop()
                if not victims:
                    victims = eviction_candidates(self.conns.values(), _ACCEPT_BATCH)
                    victims.reverse()
                    if not victims:
                        self._set_accepting(False)
                        return
                self._evict(victims.pop())
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
                    self._resume_at = _monotonic() + 0.5
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            else:
                peer = None
            ctx = self.ssl_context
            if ctx is not None:
                try:
                    sock = ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                                           suppress_ragged_eofs=self.suppress_ragged_eofs)
                except (OSError, ValueError):
                    sock.close()  # gone already
                    continue
            conn = Connection(sock, peer, RequestReader(self.limits), self.policy, _monotonic())
            self.expect_preamble(conn)
            if ctx is not None:
                conn.tls_wait = selectors.EVENT_READ
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

    def _evict(self, conn: Connection) -> None:
        """Close a waiting connection to make room; a head arriving too
        slowly is told why (408)."""
        self.log.debug("worker_connections reached: closing a %s connection from %s",
                       conn.state.value, conn.peer)
        if conn.state is ConnState.HEAD:
            try:
                conn.sock.send(error_response(408))
            except OSError:
                pass
        self._close(conn)

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                conn, ex = self.done.get_nowait()
            except queue.Empty:
                break
            self.busy.pop(conn.sock.fileno(), None)
            if self._finish_exchange(conn, ex):
                self.conns[conn.sock.fileno()] = conn
                self.selector.register(conn.sock, selectors.EVENT_READ, conn)
                conn.registered = True
                self._next_request(conn)

    def _on_readable(self, conn: Connection) -> None:
        if conn.state is _LINGER:
            self._linger(conn)
            return
        if conn.tls_wait and not self._handshake(conn):
            return
        try:
            data = conn.sock.recv(65536)
            if self.tls:
                # Plaintext OpenSSL holds already: no readiness would say so.
                while data and conn.sock.pending():
                    data += conn.sock.recv(65536)
        except WOULD_BLOCK:
            return
        except OSError:
            self._close(conn)
            return
        if data and conn.state is not _HEAD:
            conn.data_arrived(_monotonic())
        if conn.preamble is not None and data:
            try:
                data = self.read_preamble(conn, data)
            except ProxyProtocolError as exc:
                self._refuse(conn, error_response(exc.status))
                return
            if data is None:
                return
        conn.reader.feed(data)
        self._next_request(conn)

    def _handshake(self, conn: Connection) -> bool:
        """Move a TLS handshake on without blocking; True once it is done.
        A failed one (plaintext HTTP, garbage, a reset, a refused client
        certificate) closes the connection: there is no TLS to answer in."""
        sock = conn.sock
        try:
            sock.do_handshake()  # type: ignore[attr-defined]
        except ssl.SSLWantReadError:
            self._wait_tls(conn, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._wait_tls(conn, selectors.EVENT_WRITE)
            return False
        except (OSError, ValueError) as exc:
            self.log.debug("TLS handshake with %s failed: %s", conn.peer, exc)
            # Closed lingering: what the client sent past the point OpenSSL
            # gave up (a plaintext request) would make close() a reset.
            if conn.registered and conn.tls_wait != selectors.EVENT_READ:
                self.selector.modify(sock, selectors.EVENT_READ, conn)
            conn.tls_wait = 0
            self._refuse(conn, b"")
            return False
        if conn.tls_wait != selectors.EVENT_READ and conn.registered:
            self.selector.modify(sock, selectors.EVENT_READ, conn)
        conn.tls_wait = 0
        return True

    def _wait_tls(self, conn: Connection, event: int) -> None:
        if conn.tls_wait != event and conn.registered:
            self.selector.modify(conn.sock, event, conn)
        elif not conn.registered and self.conns.get(conn.sock.fileno()) is conn:
            self.selector.register(conn.sock, event, conn)
            conn.registered = True
        conn.tls_wait = event

    def _next_request(self, conn: Connection) -> None:
        """Serve every complete request buffered on ``conn``, in order
        (pipelining), until it needs more bytes or is closed."""
        while True:
            try:
                event = conn.reader.next_event()
            except HTTPError as exc:
                self.log.debug("Refused request from %s: %s", conn.peer, exc)
                self._refuse(conn, error_response(exc.status))
                return
            if event is NEED_DATA:
                return
            if not isinstance(event, Request):
                # ConnectionClosed: the client is done.
                self._close(conn)
                return
            status = self.resolve_forwarded(conn, event)
            if status:
                self._refuse(conn, error_response(status))
                return
            if not self.alive:
                self._start_drain()
            conn.request = event
            if self.threads > 1:
                self._submit(conn)
                return
            heartbeat = self.heartbeat
            heartbeat.set_current(event.raw_line)
            ex = self.handle(conn, event)
            heartbeat.set_current(b"")
            if not self._finish_exchange(conn, ex):
                return

    def _submit(self, conn: Connection) -> None:
        """Hand ``conn`` to the thread pool; the loop forgets it meanwhile."""
        fd = conn.sock.fileno()
        del self.conns[fd]
        if conn.registered:
            self.selector.unregister(conn.sock)
            conn.registered = False
        conn.progress = _monotonic()
        self.busy[fd] = conn
        self.jobs.put(conn)

    def _finish_exchange(self, conn: Connection, ex: Exchange | None) -> bool:
        """After a response: close, or wait for the next request.  True if
        the connection stays open."""
        state = self.after_exchange(conn, ex)
        if state is _LINGER:
            self._refuse(conn, b"")
            return False
        if state is ConnState.CLOSED:
            self._close(conn)
            return False
        return True

    def _refuse(self, conn: Connection, response: bytes) -> None:
        """Send ``response`` (an error, or nothing) and close, reading no
        further request.

        The close lingers (as nginx's does): shut our side, then read and
        drop what the client is still sending for a moment.  Closing with
        unread bytes would make the kernel send a reset, and the client
        could lose the very response that tells it what went wrong.
        """
        try:
            if response:
                conn.sock.send(response)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.refuse(_monotonic())
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
        if not self.accepting and self.alive and _monotonic() >= self._resume_at:
            self._set_accepting(True)

    def _expire(self) -> None:
        now = _monotonic()
        if not self.accepting and self.alive and now >= self._resume_at and (
                len(self.conns) + len(self.busy) < self.max_connections):
            self._set_accepting(True)
        expired = [c for c in self.conns.values() if c.deadline <= now]
        for conn in expired:
            action = conn.expired(now)
            if action is Expiry.CLOSE:
                if conn.state is ConnState.LINGER:
                    self._close(conn)
                    continue
                # This worker may have been busy in the app past the
                # deadline while a request sat unread in the kernel: read
                # before deciding the client is idle.
                fd = conn.sock.fileno()
                self._on_readable(conn)
                if self.conns.get(fd) is conn and conn.expired(now) is Expiry.CLOSE:
                    self._close(conn)
            elif action is Expiry.TIMEOUT:
                # Slow head (slowloris): tell the client why, then close.
                self._refuse(conn, error_response(408))

    def _thread_main(self) -> None:
        while True:
            conn = self.jobs.get()
            if conn is None:
                return
            ex = None
            try:
                ex = self.handle(conn, conn.request)  # type: ignore[arg-type]
            finally:
                self.done.put((conn, ex))
                self.wake()

    wake_w = -1

    def wake(self) -> None:
        # Signals wake the loop through the same pipe (set_wakeup_fd).
        if self.wake_w < 0:
            return  # not serving yet: the loop checks alive before it waits
        try:
            os.write(self.wake_w, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is already awake

    # -- graceful stop -----------------------------------------------------

    def _start_drain(self) -> None:
        """From the moment the loop sees that it must stop: no accepts, and
        every connection bound by the drain policy (http/connection.py)."""
        policy = self.policy
        if policy.draining:
            return
        now = _monotonic()
        policy.start_draining(now, self.cfg.graceful_timeout)
        self.heartbeat.set_state(WorkerState.STOPPING)
        self._set_accepting(False)
        for lst in self.listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
        for conn in self.conns.values():
            conn.start_drain(now)

    def _shutdown(self, pool: list[threading.Thread]) -> None:
        """Drain (see the module docstring), then stop the thread pool."""
        self._start_drain()
        deadline = self.policy.drain_deadline
        beat = self.heartbeat.beat
        while (self.conns or self.busy) and _monotonic() < deadline:
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

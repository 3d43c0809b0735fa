"""The gevent worker: WSGI apps that expect monkey-patched, cooperative I/O.

For apps written for gevent (``time.sleep``, sockets, database drivers made
cooperative by ``gevent.monkey.patch_all()``), as gunicorn's ``-k gevent``
serves them.  Only how connections wait differs from the sync worker: one
greenlet per connection instead of a selector loop.  Each exchange is
served by the same code (``wsgi_serving.py``: the request reader, the
connection core's keep-alive and framing decisions, the WSGI adapters,
``Worker.begin_request``/``end_exchange`` for hooks, the access log and the
request count); under monkey-patching its blocking-with-deadline socket
I/O (``sockio``) yields to other greenlets instead of blocking.

Patching happens in the worker after fork, before the app is imported
(:meth:`GeventWorker.prepare_process`), as gunicorn does it.  With
``preload_app`` the app was imported by the master, unpatched, before any
fork: the app must then call ``gevent.monkey.patch_all()`` first thing
itself (gunicorn's caveat too); the worker says so if it did not.

Connections: an acceptor greenlet per listening socket accepts while the
worker holds fewer than ``worker_connections`` connections.  At the limit
it makes room by closing a connection that waits on its client (idle
keep-alive, or a head arriving slowly: 408), as the sync worker does; if
every connection is in an exchange, it stops accepting until one ends, and
new clients wait in the listen backlog (gunicorn's pool does the same).

Liveness, gunicorn's semantics for async workers: the main greenlet beats
the heartbeat every second (less with a short ``timeout``), so a request
that waits cooperatively for minutes does not get the worker killed, while
app code that blocks the hub (a CPU loop, an unpatched blocking call) stops
the beats, and the arbiter kills the worker ``timeout`` seconds later.

Graceful stop (TERM, HUP, recycling): the acceptors stop and the listening
sockets close; exchanges in flight finish; waiting connections follow the
connection core's drain policy (an idle keep-alive connection is closed at
its keep-alive timeout, a request that arrives meanwhile is answered with
``Connection: close``), all within ``graceful_timeout``, after which what
is left is killed.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any

import gevent
from gevent import monkey
from gevent.event import Event
from gevent.hub import get_hub

from ..heartbeat import WorkerState
from ..http.connection import ConnState, Expiry, eviction_candidate
from ..http.proxy_protocol import ProxyProtocolError
from ..http.request import NEED_DATA, HTTPError, Request, RequestReader
from ..http.response import error_response
from .base import Worker
from .wsgi_serving import Connection, WSGIServing

__all__ = ["GeventWorker"]

_monotonic = time.monotonic
_WAITING_STATES = (ConnState.FRESH, ConnState.HEAD, ConnState.IDLE, ConnState.LINGER)
_READ = 1  # libev/libuv EV_READ


class _Recheck(Exception):
    """Thrown into a greenlet waiting on its client: its deadline changed
    (the worker began draining) or it must make room."""


class GreenConnection(Connection):
    """A connection with the greenlet serving it and its read watcher."""

    __slots__ = ("greenlet", "watcher", "evicted")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.greenlet: gevent.Greenlet | None = None
        self.watcher: Any = None
        self.evicted = False


class GeventWorker(WSGIServing, Worker):
    """WSGI on gevent; see the module docstring."""

    kind = "gevent"
    # gevent is imported by the master, as gunicorn does, so workers share
    # it; importing it patches nothing.
    shared_modules = ("gevent.socket", "gevent.select")
    # An app that patches itself with preload_app patched the master too.
    reload_keeps = ("gevent", "greenlet", "zope")
    # The main greenlet beats on a timer: an exchange finishing is not
    # what proves the hub is free.
    beats_per_exchange = False

    @classmethod
    def prepare_process(cls, app: Any) -> None:
        """After fork, before the app is imported: gevent's recommended
        ``patch_all()``.  ``app`` is the master's preloaded app, if any."""
        preloaded_unpatched = app is not None and not monkey.is_module_patched("socket")
        monkey.patch_all()
        if preloaded_unpatched:
            from ..logging import error_log
            error_log.warning(
                "preload_app with -k gevent: the app was imported by the master before "
                "gevent patched the standard library; call gevent.monkey.patch_all() at the "
                "top of the app's module (as with gunicorn), or do not preload")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Many requests run at once in one thread: as gunicorn says for
        # gevent, wsgi.multithread is true.
        self.setup_wsgi(multithread=True)
        self.max_connections = self.cfg.worker_connections
        self.conns: set[GreenConnection] = set()
        self.in_app: dict[GreenConnection, bytes] = {}  # request lines, oldest first
        self.hub = get_hub()
        self._wakeup = Event()   # set: the main greenlet looks at alive now
        self._room = Event()     # set: a connection ended (the acceptors may go on)
        self.acceptors: list[gevent.Greenlet] = []
        # How often the main greenlet beats: every second, or four times
        # per timeout if that is shorter.
        timeout = self.cfg.timeout
        self.beat_interval = min(1.0, timeout / 4) if timeout > 0 else 1.0

    # -- signals -------------------------------------------------------------

    def open_connections(self) -> int:
        return len(self.conns)

    def wake(self) -> None:
        # From the TERM handler or retire(); both run in this thread.
        self._wakeup.set()

    # -- the main greenlet -----------------------------------------------------

    def serve(self) -> None:
        for lst in self.listeners:
            lst.sock.setblocking(False)
            self.acceptors.append(gevent.spawn(self._accept_loop, lst.sock))
        interval = self.beat_interval
        beat = self.heartbeat.beat
        while self.alive:
            beat()
            self.maintenance()
            self._wakeup.wait(interval)
            self._wakeup.clear()
        self._shutdown()

    def _shutdown(self) -> None:
        """Drain (see the module docstring)."""
        now = _monotonic()
        policy = self.policy
        policy.start_draining(now, self.cfg.graceful_timeout)
        self.heartbeat.set_state(WorkerState.STOPPING)
        gevent.killall(self.acceptors)
        for lst in self.listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
        for conn in list(self.conns):
            conn.start_drain(now)
            self._recheck(conn)
        beat = self.heartbeat.beat
        while self.conns and _monotonic() < policy.drain_deadline:
            beat()
            self._room.wait(min(self.beat_interval,
                                max(0.0, policy.drain_deadline - _monotonic())))
            self._room.clear()
        if self.conns:
            self.log.warning("Worker graceful timeout (pid:%s): closing %d connections",
                             self.pid, len(self.conns))
            gevent.killall([c.greenlet for c in self.conns if c.greenlet is not None],
                           timeout=1)

    def _recheck(self, conn: GreenConnection) -> None:
        """Wake ``conn``'s greenlet if it is waiting on its client, so that it
        looks at its deadline again.  Throwing through the hub only reaches
        a greenlet still waiting on that watcher, never one that has moved
        on into the app."""
        watcher = conn.watcher
        if watcher is not None and watcher.active and conn.state in _WAITING_STATES:
            self.hub.cancel_wait(watcher, _Recheck())

    # -- accepting -------------------------------------------------------------

    def _accept_loop(self, lsock: Any) -> None:
        watcher = self.hub.loop.io(lsock.fileno(), _READ)
        try:
            while self.alive:
                if len(self.conns) >= self.max_connections and not self._make_room():
                    # Every connection is in an exchange: new clients wait in
                    # the listen backlog until one ends.
                    self._room.clear()
                    self._room.wait(1.0)
                    continue
                try:
                    sock, peer = lsock.accept()
                except BlockingIOError:
                    self.hub.wait(watcher)
                    continue
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        self.log.warning("accept() failed: %s; pausing accepts", exc.strerror)
                        gevent.sleep(0.5)
                        continue
                    if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                        continue
                    # Never let an acceptor die: the worker would serve on
                    # without accepting.
                    self.log.exception("accept() failed")
                    gevent.sleep(0.5)
                    continue
                self._start_connection(sock, peer)
        finally:
            watcher.close()

    def _make_room(self) -> bool:
        """At worker_connections: close the connection that has waited longest
        on its client.  False if every connection is in an exchange, or has
        just been accepted: those are not refused, and new clients wait in
        the listen backlog instead."""
        # Let connections accepted just now read the requests that came with
        # them first (the sync worker reads right after accept()).
        gevent.sleep(0)
        if len(self.conns) < self.max_connections:
            return True
        young = _monotonic() - self.policy.first_request_grace
        victim = eviction_candidate(c for c in self.conns if not c.evicted and not (
            c.state is ConnState.FRESH and c.since > young))
        if victim is None:
            return False
        assert isinstance(victim, GreenConnection)
        self.log.debug("worker_connections reached: closing a %s connection from %s",
                       victim.state.value, victim.peer)
        victim.evicted = True
        self._recheck(victim)
        # Counted out now: its greenlet closes it when it next runs.
        self.conns.discard(victim)
        return True

    def _start_connection(self, sock: Any, peer: Any) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            peer = None
        conn = GreenConnection(sock, peer, RequestReader(self.limits), self.policy,
                               _monotonic())
        self.expect_preamble(conn)
        conn.watcher = self.hub.loop.io(sock.fileno(), _READ)
        self.conns.add(conn)
        conn.greenlet = gevent.spawn(self._serve_connection, conn)

    # -- one connection, in its own greenlet -------------------------------------

    def _serve_connection(self, conn: GreenConnection) -> None:
        try:
            self._requests(conn)
        except gevent.GreenletExit:
            pass  # killed at the end of the graceful timeout
        except Exception:
            self.log.exception("Error serving a connection from %s", conn.peer)
        finally:
            self.in_app.pop(conn, None)
            conn.watcher.close()
            conn.close()
            self.conns.discard(conn)
            self._room.set()

    def _requests(self, conn: GreenConnection) -> None:
        """Serve every request on ``conn`` in order (keep-alive, pipelining)
        until it closes."""
        reader = conn.reader
        heartbeat = self.heartbeat
        while True:
            try:
                event = reader.next_event()
            except HTTPError as exc:
                self.log.debug("Refused request from %s: %s", conn.peer, exc)
                self._linger(conn, error_response(exc.status))
                return
            if event is NEED_DATA:
                if not self._receive(conn):
                    return
                continue
            if not isinstance(event, Request):
                return  # ConnectionClosed: the client is done
            status = self.resolve_forwarded(conn, event)
            if status:
                self._linger(conn, error_response(status))
                return
            conn.request = event
            self.in_app[conn] = event.raw_line
            heartbeat.set_current(event.raw_line)
            try:
                ex = self.handle(conn, event)
            finally:
                # Were the hub blocked now, the request to blame is the one
                # that began last of those still in the app.
                del self.in_app[conn]
                heartbeat.set_current(next(reversed(self.in_app.values()), b""))
            # max_requests, max_worker_memory's retire, the master gone: seen
            # after every exchange, as the sync worker sees them every turn.
            self.maintenance()
            state = self.after_exchange(conn, ex)
            if state is ConnState.LINGER:
                self._linger(conn, b"")
                return
            if state is ConnState.CLOSED:
                return

    def _receive(self, conn: GreenConnection) -> bool:
        """Wait for bytes of a request head within the connection's deadline
        and feed them to its reader.  False once the connection is to close
        (the deadline passed: a slow head got a 408; or it was evicted)."""
        while True:
            if conn.evicted:
                if conn.state is ConnState.HEAD:
                    self._send_quietly(conn, error_response(408))
                return False
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                now = _monotonic()
                action = conn.expired(now)
                if action is Expiry.CLOSE:
                    return False
                if action is Expiry.TIMEOUT:
                    # Slow head (slowloris): tell the client why, then close.
                    self._linger(conn, error_response(408))
                    return False
                self._wait(conn, conn.deadline - now)
                continue
            except OSError:
                return False
            if data and conn.state is not ConnState.HEAD:
                conn.data_arrived(_monotonic())
            if conn.preamble is not None and data:
                try:
                    data = self.read_preamble(conn, data)
                except ProxyProtocolError as exc:
                    self._linger(conn, error_response(exc.status))
                    return False
                if data is None:
                    continue
            conn.reader.feed(data)
            return True

    def _wait(self, conn: GreenConnection, timeout: float) -> None:
        """Until ``conn`` is readable, ``timeout`` passes, or the worker asks
        it to look at its deadline again (:meth:`_recheck`)."""
        timer = gevent.Timeout(max(timeout, 0.0))
        timer.start()
        try:
            self.hub.wait(conn.watcher)
        except _Recheck:
            pass
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
        finally:
            timer.close()

    def _linger(self, conn: GreenConnection, response: bytes) -> None:
        """Send ``response`` (an error, or nothing) and close lingering: shut
        our side, then read and drop what the client still sends for a
        moment, so that it reads the response instead of a reset."""
        sock = conn.sock
        try:
            if response:
                sock.send(response)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return
        conn.refuse(_monotonic())
        while not conn.evicted:
            try:
                if not sock.recv(65536):
                    return
                continue
            except BlockingIOError:
                pass
            except OSError:
                return
            left = conn.deadline - _monotonic()
            if left <= 0:
                return
            self._wait(conn, left)

    @staticmethod
    def _send_quietly(conn: GreenConnection, data: bytes) -> None:
        try:
            conn.sock.send(data)
        except OSError:
            pass

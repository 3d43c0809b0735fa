"""The ASGI worker: HTTP/1.1 and WebSockets on uvloop (asyncio if absent).

Per connection an :class:`~.asgi_protocol.HTTPProtocol` (reading, flow
control, keep-alive, deadlines); per request a :class:`~.asgi_cycle.Cycle`
(the app's receive and send).  Requests are read by the same strict reader
as the sync worker's.  This module is the process around them: the event
loop, accepting, the deadline sweep, the heartbeat and the graceful drain.

Accepting is done here, not by ``loop.create_server``, so that this worker
decides when not to: at ``worker_connections`` (after making room by closing
the connection that has waited longest for its client, if any), when out of
descriptors (EMFILE: a pause and one log line, where uvloop would accept and
drop connections, then stop listening for good), and from the moment a drain
begins (every connection accepted until then is registered at once, so the
drain waits for it).

TLS (``certfile``): the event loop does the handshake
(``connect_accepted_socket(ssl=...)``), asynchronously; the connection is
FRESH meanwhile and the sweep closes it if it is not through by its
deadline, ``header_timeout`` from the accept, which the loop's own handshake
timeout backs up.  A handshaking connection can be closed to make room at
``worker_connections``, like any waiting one.

Liveness: the heartbeat is beaten by a callback on the event loop itself, so
a loop blocked by a synchronous call stops beating and the arbiter kills the
worker after ``timeout``, just like a stuck sync worker.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import sys
import time
from typing import Any

from .. import tls
from ..heartbeat import WorkerState
from ..http.asgi import ClientDisconnected
from ..http.connection import Policy, eviction_candidate, eviction_candidates
from ..http.proxy import ProxyTrust
from ..http.request import Limits
from .asgi_protocol import HTTPProtocol
from .base import Worker
from .lifespan import Lifespan

__all__ = ["ASGIWorker", "ClientDisconnected"]

# Connections taken per readiness of a listening socket.
_ACCEPT_BATCH = 64
# Out of descriptors: how long accepting pauses, and how often it is logged.
_EMFILE_PAUSE = 0.5
_EMFILE_LOG_EVERY = 10.0
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
_EAGER = sys.version_info >= (3, 12)
# How long the app's lifespan task may take to end when a TERM cancels its
# startup.
_ABANDON_WAIT = 1.0


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a declared dependency
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class ASGIWorker(Worker):
    """ASGI worker; see the module docstring."""

    kind = "asgi"
    # The event loop every ASGI worker runs: imported once in the master and
    # shared, instead of a private copy per worker (about 4 MiB PSS each).
    shared_modules = ("uvloop",)
    # No beat per exchange: the loop's own tick beats (_tick), and a loop
    # that completes exchanges runs its timers too, so a beat there would
    # prove nothing more, for a clock read and a shared-memory store per
    # request.
    beats_per_exchange = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        self.loop = new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.limits = Limits.from_config(cfg)
        self.policy = Policy.from_config(cfg)
        self.proxy = ProxyTrust(cfg.forwarded_allow_ips, cfg.secure_scheme_headers,
                                cfg.forwarder_headers)
        self.proxy_protocol = cfg.proxy_protocol
        self.proxy_senders = ProxyTrust(cfg.proxy_allow_ips)
        self.root_path = cfg.root_path.rstrip("/")
        self.limit_concurrency = cfg.limit_concurrency
        self.tls = tls.enabled(cfg)
        self.handshake_timeout = cfg.header_timeout or None
        self.worker_connections = cfg.worker_connections
        self.body_timeout = cfg.body_timeout or None
        self.write_timeout = cfg.write_timeout or None
        # Every connection from its accept on (before connection_made).
        self.connections: set[HTTPProtocol] = set()
        self.tasks: set[asyncio.Task] = set()
        self.active = 0  # app calls running (limit_concurrency)
        self.accepting = False
        self.resume_handle: asyncio.TimerHandle | None = None
        self.emfile_logged_at = -_EMFILE_LOG_EVERY
        self.emfile_pauses = 0
        self.lifespan = Lifespan(self.app, cfg.lifespan, self.log)
        self.starting: asyncio.Task | None = None  # the lifespan startup
        self.stop_event: asyncio.Event | None = None
        self.drained: asyncio.Event | None = None
        self.beat_interval = min(1.0, cfg.timeout / 4) if cfg.timeout > 0 else 1.0
        # Deadlines are checked this often: a twentieth of the shortest
        # timeout a connection can be given, within 50-500 ms.
        shortest = min(t for t in (cfg.keepalive, cfg.header_timeout,
                                   self.policy.first_request_grace) if t > 0)
        self.sweep_interval = min(0.5, max(0.05, shortest / 20))
        # Armed by the first connection; an idle worker does not wake for it.
        self.sweep_handle: asyncio.TimerHandle | None = None

    def startup(self) -> bool:
        # The heartbeat must not expire while a slow startup runs.
        self.heartbeat.beat()
        loop = self.loop
        self.starting = loop.create_task(self.lifespan.startup(self.cfg.timeout))
        try:
            return loop.run_until_complete(self.starting)
        except asyncio.CancelledError:
            # TERM while starting (see _on_term): stop the app's startup too.
            loop.run_until_complete(self.lifespan.abandon(_ABANDON_WAIT))
            return False
        finally:
            self.starting = None

    def serve(self) -> None:
        # TERM and USR1 stay with the worker's own handlers (set before the
        # app's startup): loop.add_signal_handler() here would replace them,
        # and a TERM arriving between that call and the loop running would
        # be recorded by the loop and never acted on.  The handlers wake
        # the loop instead (wake()); uvloop runs them as soon as a signal
        # comes, since it watches the wake-up fd while it runs.
        loop = self.loop
        self.stop_event = asyncio.Event()
        self.drained = asyncio.Event()
        for lst in self.listeners:
            lst.sock.setblocking(False)
        self._set_accepting(True)
        self._tick()
        try:
            loop.run_until_complete(self._run())
        finally:
            loop.close()

    def open_connections(self) -> int:
        return len(self.connections)

    def wake(self) -> None:
        loop = self.loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._on_term)

    def _on_term(self) -> None:
        """On the loop, once ``alive`` went False (TERM, retire): cut a
        startup short, or begin the drain."""
        if self.starting is not None:
            self.starting.cancel()
        if self.stop_event is not None:
            self.stop_event.set()

    def _tick(self) -> None:
        """Runs on the loop: a blocked loop stops beating."""
        self.heartbeat.beat()
        self.heartbeat.set_current(b"")
        self.maintenance()
        if not self.alive and self.stop_event is not None:
            self.stop_event.set()
        self.loop.call_later(self.beat_interval, self._tick)

    # -- accepting -------------------------------------------------------------

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        self.accepting = on
        for lst in self.listeners:
            if on:
                self.loop.add_reader(lst.sock.fileno(), self._accept, lst.sock)
            else:
                self.loop.remove_reader(lst.sock.fileno())

    def _accept(self, lsock: socket.socket) -> None:
        """The listening socket is readable: take what is queued."""
        victims: list[HTTPProtocol] = []
        for _ in range(_ACCEPT_BATCH):
            victim = None
            if len(self.connections) >= self.worker_connections:
                # Chosen once for the batch (see SyncWorker._accept).
                while victims and not victims[-1].evictable:
                    victims.pop()
                if not victims:
                    victims = eviction_candidates(  # type: ignore[assignment]
                        (c for c in self.connections if c.closable), _ACCEPT_BATCH)
                    victims.reverse()
                if not victims:
                    # Every connection is in an exchange: resumed when one
                    # closes or waits again (checked by the sweep).
                    self._set_accepting(False)
                    return
                victim = victims.pop()
            try:
                sock, peer = lsock.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR):
                    continue
                self._accept_failed(exc)
                return
            if victim is not None:
                victim.evict()
            proto = HTTPProtocol(self)
            # Registered now, not at connection_made: a drain starting before
            # that callback must still wait for this connection.
            self.connections.add(proto)
            coro = self._adopt(proto, sock, peer)
            if _EAGER:
                task = asyncio.Task(coro, loop=self.loop, eager_start=True)
            else:
                task = self.loop.create_task(coro)
            self.keep(task)

    async def _adopt(self, proto: HTTPProtocol, sock: socket.socket, peer: Any) -> None:
        ctx = self.ssl_context
        try:
            if ctx is None:
                await self.loop.connect_accepted_socket(lambda: proto, sock)
            else:
                proto.handshaking(sock)
                self.sweep_soon()  # the sweep bounds the handshake
                await self.loop.connect_accepted_socket(
                    lambda: proto, sock, ssl=ctx, ssl_handshake_timeout=self.handshake_timeout)
        except Exception as exc:
            # Plaintext HTTP, garbage, a reset, a refused client
            # certificate, a stall: there is no TLS to answer in.
            if ctx is not None:
                self.log.debug("TLS handshake with %s failed: %s", peer or "unix", exc)
            sock.close()  # the loop's transport has it, if it got that far
            self.connection_closed(proto)

    def _eviction_candidate(self) -> HTTPProtocol | None:
        """The connection to close to make room (the connection core's
        choice), among those whose transport is made."""
        return eviction_candidate(  # type: ignore[return-value]
            c for c in self.connections if c.closable)

    def _accept_failed(self, exc: OSError) -> None:
        # Out of descriptors (EMFILE, ENFILE) or memory, or anything else:
        # stop accepting for a moment rather than spin on a listener that
        # stays readable; the queued clients wait in the backlog (or go to
        # another worker).  One log line per interval, with a count.
        self.emfile_pauses += 1
        now = self.loop.time()
        if now - self.emfile_logged_at >= _EMFILE_LOG_EVERY:
            level = self.log.warning if exc.errno in _OUT_OF_RESOURCES else self.log.error
            level("accept() failed: %s (%d open connections); pausing accepts for %.1fs "
                  "(%d pause(s) since the last message)", exc.strerror or exc,
                  len(self.connections), _EMFILE_PAUSE, self.emfile_pauses)
            self.emfile_logged_at = now
            self.emfile_pauses = 0
        self._pause_accepting(_EMFILE_PAUSE)

    def _pause_accepting(self, seconds: float) -> None:
        self._set_accepting(False)
        if self.resume_handle is None:
            self.resume_handle = self.loop.call_later(seconds, self._resume_accepting)

    def _resume_accepting(self) -> None:
        self.resume_handle = None
        self._maybe_accept()

    def _maybe_accept(self) -> None:
        if self.accepting or self.policy.draining or self.resume_handle is not None:
            return
        if (len(self.connections) < self.worker_connections
                or self._eviction_candidate() is not None):
            self._set_accepting(True)

    def connection_closed(self, proto: HTTPProtocol) -> None:
        connections = self.connections
        connections.discard(proto)
        if not self.accepting:
            self._maybe_accept()
        if not connections and self.policy.draining and self.drained is not None:
            self.drained.set()

    def keep(self, task: asyncio.Task) -> None:
        """Hold a reference to a running task (the loop keeps only weak ones)."""
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- deadlines -----------------------------------------------------------------

    def sweep_soon(self) -> None:
        if self.sweep_handle is None:
            self.sweep_handle = self.loop.call_later(self.sweep_interval, self.sweep)

    def sweep(self) -> None:
        """Act on the connections whose deadline has passed; again in
        ``sweep_interval`` while there are connections."""
        now = time.monotonic()
        for conn in [c for c in self.connections if 0.0 < c.deadline <= now]:
            conn.on_deadline(now)
        if not self.accepting:
            self._maybe_accept()
        self.sweep_handle = (self.loop.call_later(self.sweep_interval, self.sweep)
                             if self.connections else None)

    # -- apps --------------------------------------------------------------------

    def app_returned(self, task: asyncio.Task | None) -> None:
        """An app call ended: one fewer running (limit_concurrency, the
        drain), and its task, held since it started, is let go."""
        self.active -= 1
        if task is not None:
            self.tasks.discard(task)

    # -- graceful stop -------------------------------------------------------------

    async def _run(self) -> None:
        assert self.stop_event is not None and self.drained is not None
        await self.stop_event.wait()
        self.heartbeat.set_state(WorkerState.STOPPING)
        grace = self.cfg.graceful_timeout
        now = time.monotonic()
        self.policy.start_draining(now, grace)
        self._set_accepting(False)
        for lst in self.listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
        for conn in list(self.connections):
            conn.begin_drain(now)
        loop = self.loop
        deadline = loop.time() + grace
        if self.connections and grace > 0:
            try:
                await asyncio.wait_for(self.drained.wait(), grace)
            except asyncio.TimeoutError:
                pass
        for conn in list(self.connections):
            conn.abort()
        # Apps still running after their responses (background tasks).
        while self.active > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        await self.lifespan.shutdown(self.cfg.graceful_timeout)

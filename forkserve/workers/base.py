"""What every worker process does, whatever protocol it serves.

A worker is forked by the arbiter, drops privileges, loads the app (unless
the master preloaded it), picks its concrete class (sync for WSGI, asgi for
ASGI), reports READY through its heartbeat and serves until told to stop.

Signals: TERM drains gracefully; INT and QUIT exit at once; ABRT is the
arbiter's timeout kill; USR1 reopens logs.  TERM and USR1 only set a flag
and wake the serving loop (:meth:`Worker.wake`).  INT, QUIT and ABRT must
interrupt whatever the app is doing, so their handlers raise SystemExit:
that exception is the one thing they do, and the normal unwinding does the
rest.  Until the worker is READY there is nothing to drain, so TERM exits at
once too: by SystemExit while the app imports and ``post_worker_init``
runs, by cancelling the app's startup (ASGI lifespan) after that.

No signal is lost at birth: the master forks with its signals blocked, and
the child unblocks them only once its own handlers are in place, so a TERM
sent while it is still starting waits for those handlers.  From then on the
same Python handlers stay in place for the worker's whole life (no event
loop takes SIGTERM over), so there is no handover in which a TERM could go
to a handler that no longer matters.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import ssl
import sys
import threading
import time
import traceback
from typing import Any, ClassVar, NoReturn

from .. import tls
from ..app import AppLoadError, load_app
from ..config import Config, ConfigError
from ..heartbeat import Heartbeat, RetireReason, Slot, WorkerState
from ..hookobjects import GunicornWorkerNames
from ..http.connection import Exchange, RequestView
from ..logging import AccessLog, error_log, reopen_logs
from ..sockets import Listener
from ..statsd import current as statsd_sender
from .registry import AUTO, worker_class, worker_kind

__all__ = ["Worker", "EXIT_BOOT_ERROR", "run_worker"]

#: A worker that fails before serving (import error, missing callable, failed
#: post_fork hook, lifespan startup failed) exits with this code, and the
#: arbiter stops instead of respawning it in a loop.
EXIT_BOOT_ERROR = 3

_IGNORED = (signal.SIGHUP, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2)

# How often, at most, a worker with max_worker_memory reads its RSS: a read
# of /proc/self/statm costs about 2 us, so this bounds the cost at 0.2 %
# however fast requests come, and still checks after every request that
# allocates enough to matter (touching 10 MB alone takes longer).
_MEMORY_CHECK_INTERVAL = 0.001
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_monotonic = time.monotonic
_BEGUN = int(Slot.BEGUN)


class Worker(GunicornWorkerNames):
    """A worker process; subclasses implement :meth:`serve`.  Hooks get it
    as ``worker``, with gunicorn's names (:class:`GunicornWorkerNames`)."""

    kind = "none"
    #: Modules the master imports before forking workers of this class, in
    #: addition to the class's own, so that workers share them
    #: (copy-on-write) instead of each importing a private copy.
    shared_modules: ClassVar[tuple[str, ...]] = ()

    #: Top-level packages a HUP with ``preload_app`` must not forget and
    #: import afresh, though the app imported them: ones that patch the
    #: standard library (gevent, when the app patches itself) cannot be
    #: imported twice.
    reload_keeps: ClassVar[tuple[str, ...]] = ()

    #: Whether end_exchange beats the heartbeat.  A worker that runs several
    #: exchanges at once (threads) beats from its loop instead, so that one
    #: stuck exchange still stops the beats; so does the ASGI worker, whose
    #: loop beats from a timer callback.
    beats_per_exchange = True

    #: The TLS context connections are served with (None: plain TCP); set
    #: by run_worker before serve().
    ssl_context: ssl.SSLContext | None = None

    # max_worker_memory, in bytes (0: none), once watch_memory() set it.
    memory_limit = 0
    _memory_next_check = 0.0
    _statm = -1

    def __init__(self, age: int, ppid: int, listeners: list[Listener], cfg: Config,
                 heartbeat: Heartbeat, app: Any = None) -> None:
        self.age = age
        self.ppid = ppid
        self.pid = os.getpid()
        self.listeners = listeners
        self.cfg = cfg
        self.heartbeat = heartbeat
        self.app = app
        self.log = error_log
        self.access_log = AccessLog(cfg.access_log_format, json=cfg.log_format == "json")
        # None unless statsd_host is set: then end_exchange sends each
        # request's metrics from this process's own socket.
        self.statsd = statsd_sender()
        self.alive = True
        self.reopen_requested = False
        self.nr = 0  # requests served
        # The traffic counters in shared memory, when the master exports
        # them (metrics_bind); None costs the hot path one test.
        self.counters: Heartbeat | None = heartbeat if cfg.metrics_bind else None
        # Threads of one worker add to the same counters: a worker with a
        # thread pool sets a lock, so no increment is lost between them.
        self.counter_lock: threading.Lock | None = None
        jitter = random.randint(0, cfg.max_requests_jitter) if cfg.max_requests_jitter else 0
        self.max_requests = cfg.max_requests + jitter if cfg.max_requests > 0 else sys.maxsize

    def __str__(self) -> str:
        return f"<Worker {self.pid}>"

    # -- signals ---------------------------------------------------------

    def init_boot_signals(self) -> None:
        """Handlers while booting (post_fork, app import, post_worker_init):
        TERM, INT and QUIT exit at once, since there is nothing to drain
        yet."""
        self._ignore_and_default()
        signal.signal(signal.SIGTERM, self.handle_exit_booting)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGABRT, self.handle_abort)
        signal.signal(signal.SIGUSR1, self.handle_usr1)

    def _ignore_and_default(self) -> None:
        for sig in _IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # A client hanging up mid-write is an EPIPE error, not a signal.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def init_signals(self) -> None:
        """Handlers from the app's startup on (see :meth:`run`): TERM stops
        the worker through its loop, which drains."""
        self._ignore_and_default()
        signal.signal(signal.SIGTERM, self.handle_exit)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGABRT, self.handle_abort)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        # Interrupted syscalls are retried (PEP 475); TERM must not abort an
        # in-flight request, only stop the loop from taking new ones.
        signal.siginterrupt(signal.SIGTERM, False)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False
        self.wake()

    def wake(self) -> None:
        """Make the serving loop look at ``alive`` now rather than at its
        next tick.  Called by the TERM handler and by :meth:`retire`, maybe
        from another thread: only enqueues."""

    def handle_exit_booting(self, sig: int, frame: Any) -> NoReturn:
        raise SystemExit(0)

    def handle_usr1(self, sig: int, frame: Any) -> None:
        self.reopen_requested = True

    def handle_quit(self, sig: int, frame: Any) -> NoReturn:
        self.cfg.worker_int(self)
        raise SystemExit(0)

    def handle_abort(self, sig: int, frame: Any) -> NoReturn:
        self.alive = False
        self.aborted = True
        self.cfg.worker_abort(self)
        raise SystemExit(1)

    # -- life ------------------------------------------------------------

    def maintenance(self) -> None:
        """Between events: reopen logs, notice a dead master, count requests."""
        if self.reopen_requested:
            self.reopen_requested = False
            reopen_logs()
        if os.getppid() != self.ppid and self.alive:
            self.retire(f"Master {self.ppid} is gone; worker {self.pid} exiting", logging.WARNING,
                        RetireReason.MASTER_GONE)
        heartbeat = self.heartbeat
        heartbeat.set_requests(self.nr)
        if self.counters is not None:
            heartbeat.set_connections(self.open_connections())
        if self.nr >= self.max_requests and self.alive:
            self.retire(f"Autorestarting worker {self.pid} after {self.nr} requests",
                        reason=RetireReason.MAX_REQUESTS)

    def open_connections(self) -> int:
        """Client connections open now (for the master's metrics)."""
        return 0

    def retire(self, why: str, level: int = logging.INFO,
               reason: RetireReason = RetireReason.NONE) -> None:
        """Stop taking new work, finish what is in flight and exit, for a
        reason of the worker's own (a limit reached, the master gone).

        It is a drain like the one TERM asks for, started the same way as
        the TERM handler starts it: ``alive`` goes False and the serving
        loop is woken (:meth:`wake`).  A TERM from the master at the same
        moment does the same two things, so whichever comes first, the
        worker drains once and nothing is lost.  The master sees the
        heartbeat go STOPPING and starts a replacement.
        """
        if not self.alive:
            return
        self.log.log(level, "%s", why)
        # Before the state goes STOPPING, so the master reads why with it.
        self.heartbeat.set_retire_reason(reason)
        self.alive = False
        self.wake()

    def watch_memory(self, limit: int) -> None:
        """Retire once RSS is over ``limit`` bytes: :meth:`end_exchange`
        calls :meth:`check_memory` after each request of a worker with a
        limit.  Where /proc is missing, the master's sampling (about once a
        second) is the only check."""
        try:
            self._statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return
        self.memory_limit = limit

    def check_memory(self) -> None:
        """Retire if RSS is over ``memory_limit`` (read at most once a
        millisecond)."""
        now = time.monotonic()
        if now < self._memory_next_check or not self.alive:
            return
        self._memory_next_check = now + _MEMORY_CHECK_INTERVAL
        try:
            rss = int(os.pread(self._statm, 64, 0).split()[1]) * _PAGE_SIZE
        except (OSError, ValueError, IndexError):
            return
        if rss > self.memory_limit:
            self.retire(f"Recycling worker {self.pid}: RSS {rss / 1048576:.1f} MiB is over "
                        f"max_worker_memory ({self.memory_limit / 1048576:.1f} MiB)",
                        reason=RetireReason.MEMORY)

    def request_done(self) -> None:
        # The count reaches the master's status line through maintenance():
        # once a tick, not once a request.
        self.nr += 1

    # -- one exchange, whatever the worker kind --------------------------

    def begin_request(self, ex: Exchange) -> bool:
        """Before the app sees a request: the ``pre_request`` hook, given a
        :class:`RequestView`.  False if the hook failed (logged): answer
        that request with a 500 and do not call the app.  Counts the
        request as in progress (for the master's metrics)."""
        counters = self.counters
        if counters is not None:
            if self.counter_lock is None:
                counters.counts[_BEGUN] += 1  # count_begun(), without the call
            else:
                with self.counter_lock:
                    counters.counts[_BEGUN] += 1
        hook = self.cfg.hooks.get("pre_request")
        if hook is None:
            return True
        try:
            hook(self, RequestView(ex))
        except Exception:
            self.log.error("pre_request hook failed for %s:\n%s",
                           ex.request.raw_line.decode("latin-1"), traceback.format_exc())
            return False
        return True

    def end_exchange(self, ex: Exchange) -> None:
        """After every exchange, every worker kind: ``post_request(worker,
        req, environ, resp)`` (``environ`` is the ASGI scope for ASGI,
        ``resp`` the Exchange; a failure is logged, never fatal), the
        access log line, the statsd metrics (with ``statsd_host``), the
        request count for ``max_requests``, the traffic counters in shared
        memory (the master's metrics), and a heartbeat: a worker that
        completes requests is making progress."""
        self.nr += 1  # request_done(), here without the call; before the hook, as gunicorn
        counters = self.counters
        statsd = self.statsd
        if counters is not None or statsd is not None:
            # One clock read for both, before the hook: the exchange is over.
            duration = _monotonic() - ex.start
            if statsd is not None:
                statsd.request(ex.status_code, duration)
            if counters is not None:
                lock = self.counter_lock
                if lock is None:
                    counters.count_exchange(ex.status_code, duration, ex.sent, ex.received)
                else:
                    with lock:
                        counters.count_exchange(ex.status_code, duration, ex.sent, ex.received)
        hook = self.cfg.hooks.get("post_request")
        if hook is not None:
            try:
                hook(self, RequestView(ex), ex.environ, ex)
            except Exception:
                self.log.error("post_request hook failed for %s:\n%s",
                               ex.request.raw_line.decode("latin-1"), traceback.format_exc())
        access_log = self.access_log
        if access_log.enabled:
            access_log.log_exchange(ex.request, ex.client, ex.status_code, ex.sent,
                                    ex.response_headers, ex.start)
        if self.memory_limit:
            self.check_memory()
        if self.beats_per_exchange:
            self.heartbeat.beat()

    def run(self) -> int:
        """post_worker_init, app startup, READY, serve; the exit code."""
        try:
            self.cfg.post_worker_init(self)
        except Exception:
            self.log.error("post_worker_init failed:\n%s", traceback.format_exc())
            return EXIT_BOOT_ERROR
        self.booted = True
        self.init_signals()
        if not self.startup():
            # A TERM during the startup cancels it: a stop, not a failure.
            return 0 if not self.alive else EXIT_BOOT_ERROR
        self.heartbeat.set_state(WorkerState.READY)
        self.serve()
        return 0

    @classmethod
    def prepare_process(cls, app: Any) -> None:
        """In the worker, after fork and ``post_fork``, before the app is
        imported: what this kind needs done to the process first (gevent
        monkey-patches).  ``app`` is the master's preloaded app, or None.
        Only called when ``worker_class`` names the kind (not ``auto``)."""

    def startup(self) -> bool:
        """App startup before READY (ASGI lifespan); False fails the boot,
        or, with ``alive`` False, means a TERM cut it short."""
        return True

    def serve(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# glibc mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> None:
    """Keep glibc from returning the heap's top to the kernel on every few
    requests.

    Each request allocates and frees buffers of its size (a 16 KiB body is
    two 16 KiB blocks).  With glibc's defaults, whenever 128 KiB sits free
    at the top of the heap it is given back with brk(), and the next
    requests fault the pages in again: measured on the ASGI worker under a
    16 KiB POST load, 80,000 page faults and 3,000 brk calls a second and a
    quarter of the throughput, or none of it, depending only on where
    earlier allocations (imports before the fork) left the heap's top.
    Fixed thresholds make it independent of that layout: blocks of 1 MiB and
    more are mmapped, and the top is trimmed only past 4 MiB free (at most
    that much memory kept per worker).  Setting them turns off glibc's own
    adjustment of the two, so both are set.  Elsewhere (musl, macOS) this
    does nothing.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    mallopt(_M_TRIM_THRESHOLD, 4 << 20)


def _drop_privileges(cfg: Config) -> None:
    import grp
    import pwd

    if cfg.group is not None:
        gid = cfg.group if isinstance(cfg.group, int) else grp.getgrnam(cfg.group).gr_gid
        os.setgid(gid)
    if cfg.user is not None:
        pw = pwd.getpwuid(cfg.user) if isinstance(cfg.user, int) else pwd.getpwnam(cfg.user)
        if cfg.group is None:
            os.setgid(pw.pw_gid)
        os.initgroups(pw.pw_name, os.getgid())
        os.setuid(pw.pw_uid)


def run_worker(server: Any, age: int, listeners: list[Listener], cfg: Config,
               heartbeat: Heartbeat, app: Any, memory_limit: int = 0) -> NoReturn:
    """Child-side entry point after fork; never returns.

    The master forked with its signals blocked (see the module docstring):
    they are unblocked here once this process's own handlers are in place.
    ``memory_limit`` is max_worker_memory in bytes, jitter included (0:
    none).
    """
    code = 0
    pre = current = Worker(age, server.pid, listeners, cfg, heartbeat, app)
    try:
        pre.init_boot_signals()
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        tune_malloc()
        try:
            from setproctitle import setproctitle
            setproctitle(f"forkserve: worker [{server.proc_name}]")
        except ImportError:  # pragma: no cover - a declared dependency
            pass
        try:
            cfg.post_fork(server, pre)
            # Before dropping privileges: key files are often root's only.
            # Built afresh by each worker, so a HUP reads new certificates.
            ssl_context = tls.server_context(cfg) if tls.enabled(cfg) else None
            _drop_privileges(cfg)
            if cfg.worker_class != AUTO:
                worker_class(worker_kind(cfg.worker_class, app)).prepare_process(app)
            if app is None:
                app = load_app(cfg.wsgi_app, cfg.chdir, cfg.pythonpath, cfg.worker_class)
        except (AppLoadError, ConfigError) as exc:
            error_log.error("Worker %s failed to boot: %s", pre.pid, exc)
            code = EXIT_BOOT_ERROR
            return  # finally exits
        except Exception:
            error_log.error("Worker %s failed to boot:\n%s", pre.pid, traceback.format_exc())
            code = EXIT_BOOT_ERROR
            return
        kind = worker_kind(cfg.worker_class, app)
        cls = worker_class(kind)
        worker = current = cls(age, server.pid, listeners, cfg, heartbeat, app)
        worker.ssl_context = ssl_context
        heartbeat.set_kind(kind)
        # The boot handlers again, bound to this worker (a USR1 meanwhile
        # is carried over); Worker.run() installs the serving ones.
        worker.init_boot_signals()
        worker.reopen_requested = pre.reopen_requested
        # What post_fork set on its worker (gunicorn's hooks keep one
        # worker object from post_fork on) stays for the later hooks.
        for name, value in vars(pre).items():
            vars(worker).setdefault(name, value)
        if memory_limit:
            worker.watch_memory(memory_limit)
        worker.log.info("Booting worker with pid %s (%s%s)", worker.pid, kind,
                        ", detected" if cfg.worker_class == "auto" else "")
        code = worker.run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        error_log.exception("Worker %s exiting on an error", pre.pid)
        code = 1
    finally:
        # Nothing may keep this process from os._exit(): a signal handler's
        # SystemExit (a TERM still on the boot handler, an INT) raised
        # during the hook would otherwise unwind into the master's code.
        try:
            try:
                cfg.worker_exit(server, current)
            except Exception:
                error_log.exception("worker_exit hook failed")
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)

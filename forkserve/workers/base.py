"""What every worker process does, whatever protocol it serves.

A worker is forked by the arbiter, drops privileges, loads the app (unless
the master preloaded it), picks its concrete class (sync for WSGI, asgi for
ASGI), reports READY through its heartbeat and serves until told to stop.

Signals: TERM drains gracefully; INT and QUIT exit at once; ABRT is the
arbiter's timeout kill; USR1 reopens logs.  TERM and USR1 only set a flag
and wake the serving loop.  INT, QUIT and ABRT must interrupt whatever the
app is doing, so their handlers raise SystemExit: that exception is the one
thing they do, and the normal unwinding does the rest.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import sys
import traceback
from typing import Any, NoReturn

from ..app import AppLoadError, detect_kind, load_app
from ..config import Config
from ..heartbeat import Heartbeat, WorkerState
from ..http.connection import Exchange, RequestView
from ..logging import AccessLog, error_log, reopen_logs
from ..sockets import Listener

__all__ = ["Worker", "EXIT_BOOT_ERROR", "run_worker"]

#: A worker that fails before serving (import error, missing callable, failed
#: post_fork hook, lifespan startup failed) exits with this code, and the
#: arbiter stops instead of respawning it in a loop.
EXIT_BOOT_ERROR = 3

_IGNORED = (signal.SIGHUP, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2)


class Worker:
    """A worker process; subclasses implement :meth:`serve`."""

    kind = "none"

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
        self.access_log = AccessLog(cfg.access_log_format)
        self.alive = True
        self.reopen_requested = False
        self.nr = 0  # requests served
        jitter = random.randint(0, cfg.max_requests_jitter) if cfg.max_requests_jitter else 0
        self.max_requests = cfg.max_requests + jitter if cfg.max_requests > 0 else sys.maxsize

    def __str__(self) -> str:
        return f"<Worker {self.pid}>"

    # -- signals ---------------------------------------------------------

    def init_signals(self) -> None:
        for sig in _IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.handle_exit)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGABRT, self.handle_abort)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        # A client hanging up mid-write is an EPIPE error, not a signal.
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Interrupted syscalls are retried (PEP 475); TERM must not abort an
        # in-flight request, only stop the loop from taking new ones.
        signal.siginterrupt(signal.SIGTERM, False)

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.alive = False

    def handle_usr1(self, sig: int, frame: Any) -> None:
        self.reopen_requested = True

    def handle_quit(self, sig: int, frame: Any) -> NoReturn:
        self.cfg.worker_int(self)
        raise SystemExit(0)

    def handle_abort(self, sig: int, frame: Any) -> NoReturn:
        self.alive = False
        self.cfg.worker_abort(self)
        raise SystemExit(1)

    # -- life ------------------------------------------------------------

    def maintenance(self) -> None:
        """Between events: reopen logs, notice a dead master, count requests."""
        if self.reopen_requested:
            self.reopen_requested = False
            reopen_logs()
        if os.getppid() != self.ppid:
            if self.alive:
                self.log.warning("Master %s is gone; worker %s exiting", self.ppid, self.pid)
            self.alive = False
        self.heartbeat.set_requests(self.nr)
        if self.nr >= self.max_requests and self.alive:
            self.log.info("Autorestarting worker %s after %s requests", self.pid, self.nr)
            self.alive = False

    def request_done(self) -> None:
        # The count reaches the master's status line through maintenance():
        # once a tick, not once a request.
        self.nr += 1

    # -- one exchange, whatever the worker kind --------------------------

    def begin_request(self, ex: Exchange) -> bool:
        """Before the app sees a request: the ``pre_request`` hook, given a
        :class:`RequestView`.  False if the hook failed (logged): answer
        that request with a 500 and do not call the app."""
        hook = self.cfg.hooks.get("pre_request")
        if hook is None:
            return True
        try:
            hook(self, RequestView(ex.request))
        except Exception:
            self.log.error("pre_request hook failed for %s:\n%s",
                           ex.request.raw_line.decode("latin-1"), traceback.format_exc())
            return False
        return True

    def end_exchange(self, ex: Exchange) -> None:
        """After every exchange, every worker kind: ``post_request(worker,
        req, environ, resp)`` (``environ`` is the ASGI scope for ASGI,
        ``resp`` the Exchange; a failure is logged, never fatal), the
        access log line, the request count for ``max_requests``, and a
        heartbeat: a worker that completes requests is making progress."""
        hook = self.cfg.hooks.get("post_request")
        if hook is not None:
            try:
                hook(self, RequestView(ex.request), ex.environ, ex)
            except Exception:
                self.log.error("post_request hook failed for %s:\n%s",
                               ex.request.raw_line.decode("latin-1"), traceback.format_exc())
        access_log = self.access_log
        if access_log.enabled:
            access_log.log_exchange(ex.request, ex.client, ex.status_code, ex.sent,
                                    ex.response_headers, ex.start)
        self.request_done()
        self.beat_after_exchange()

    def beat_after_exchange(self) -> None:
        """The heartbeat after a completed exchange.  A worker that runs
        several exchanges at once (threads) beats from its loop instead, so
        that one stuck exchange still stops the beats."""
        self.heartbeat.beat()

    def run(self) -> int:
        """post_worker_init, app startup, READY, serve; the exit code."""
        try:
            self.cfg.post_worker_init(self)
        except Exception:
            self.log.error("post_worker_init failed:\n%s", traceback.format_exc())
            return EXIT_BOOT_ERROR
        if not self.startup():
            return EXIT_BOOT_ERROR
        self.heartbeat.set_state(WorkerState.READY)
        self.serve()
        return 0

    def startup(self) -> bool:
        """App startup before READY (ASGI lifespan); False fails the boot."""
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


def worker_kind(setting: str, app: Any) -> str:
    """The worker kind for the ``worker_class`` setting: ``"auto"`` asks the
    app (ASGI, else sync); any other setting is taken as it is."""
    if setting == "auto":
        return "asgi" if detect_kind(app) == "asgi" else "sync"
    return setting


def worker_class(kind: str) -> type[Worker]:
    """The concrete worker class for ``"wsgi"``/``"sync"`` or ``"asgi"``."""
    if kind in ("sync", "wsgi"):
        from .sync import SyncWorker
        return SyncWorker
    if kind == "asgi":
        from .asgi import ASGIWorker
        return ASGIWorker
    raise ValueError(kind)


def run_worker(server: Any, age: int, listeners: list[Listener], cfg: Config,
               heartbeat: Heartbeat, app: Any) -> NoReturn:
    """Child-side entry point after fork; never returns."""
    code = 0
    pre = current = Worker(age, server.pid, listeners, cfg, heartbeat, app)
    try:
        pre.init_signals()
        tune_malloc()
        try:
            from setproctitle import setproctitle
            setproctitle(f"forkserve: worker [{server.proc_name}]")
        except ImportError:  # pragma: no cover - a declared dependency
            pass
        try:
            cfg.post_fork(server, pre)
            _drop_privileges(cfg)
            if app is None:
                app = load_app(cfg.wsgi_app, cfg.chdir, cfg.pythonpath)
        except AppLoadError as exc:
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
        worker.init_signals()
        worker.log.info("Booting worker with pid %s (%s%s)", worker.pid, kind,
                        ", detected" if cfg.worker_class == "auto" else "")
        code = worker.run()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        error_log.exception("Worker %s exiting on an error", pre.pid)
        code = 1
    finally:
        try:
            cfg.worker_exit(server, current)
        except Exception:
            error_log.exception("worker_exit hook failed")
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


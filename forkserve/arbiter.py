"""The arbiter: the master process.

It binds the listening sockets once, forks the workers and supervises them
from one loop: handle the signals that came, sleep until the next one (or a
tick), reap the dead, murder the stuck, recycle, finish a reload, keep the
count.  Signal handlers only record the signal; the loop handles it.  The
parts it composes live in ``forkserve/master/``: the worker table
(``pool``), generations and HUP (``reload``), USR2 (``reexec``), the
signals themselves (``signals``) and when to replace a crashed worker
(``respawn``).

Signals:
  HUP   reload config and app; new workers start, old ones drain once the new
        generation is READY.  The listening sockets never close.  A HUP during
        a reload starts one more reload once the current one settles.
  TERM  graceful stop: stop accepting, finish in-flight requests, exit 0.
        With drain_delay, /readyz first answers 503 for that long while
        everything keeps serving; a second TERM ends the delay.
  INT, QUIT  fast stop; also during a graceful stop, which it cuts short.
  TTIN, TTOU  one worker more, one fewer.
  USR1  reopen log files, in the master and every worker.
  USR2  re-execute the master binary, handing it the listening sockets.
  WINCH stop all workers, keep the master (when not on a terminal).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

from . import statsd
from .app import AppLoadError, detect_kind, load_app
from .config import Config
from .hookobjects import ServerView
from .logging import error_log, reopen_logs
from .master.control import ControlListener
from .master.metrics import Metrics
from .master.pool import Exit, WorkerPool, WorkerRecord
from .master.reexec import Reexec
from .master.reload import Generations
from .master.respawn import SPACING, RespawnPolicy
from .master.signals import NAMES, SignalInbox
from .master.watcher import Watcher, watch_roots
from .sockets import Listener, close_listeners, create_listeners, inherited_fds
from .systemd import Notifier

__all__ = ["Arbiter", "HaltServer", "WorkerRecord"]

# Exit statuses of the master.
EXIT_BOOT_FAILED = 3

# The loop's tick: how long it sleeps with nothing to do, and while workers
# boot (so that a new generation takes over, and readiness is announced, as
# soon as it is up).
_TICK = 1.0
_TICK_BOOTING = 0.05


class HaltServer(Exception):
    """Stop the master with ``exit_status`` after ``reason`` is logged."""

    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


class Arbiter:
    """The master process; :meth:`run` never returns."""

    def __init__(self, cfg: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.pid = os.getpid()
        self.listeners: list[Listener] = []
        self.num_workers = cfg.workers
        self.app: Any = None
        self.signals = SignalInbox()
        self.pool = WorkerPool(self)
        self.reloads = Generations(self)
        self.reexec = Reexec(self)
        self.respawn = RespawnPolicy()
        self.notifier = Notifier()
        self.watcher: Watcher | None = None   # reload: the app's files
        self.statsd_metrics = statsd.MasterMetrics()
        # The control listener (metrics, readiness) registers its sockets
        # here: fd -> what to call when it is readable (or writable).
        self.readers: dict[int, Callable[[], None]] = {}
        self.writers: dict[int, Callable[[], None]] = {}
        self.metrics = Metrics(self)
        self.control: ControlListener | None = None
        self.started_at = time.monotonic()
        # TERM with drain_delay: when the delay ends (monotonic), else None.
        self.draining_until: float | None = None
        self.ready_announced = False
        self.pidfile_path: str | None = None
        self.stopping = False
        self.title = "master"
        # Set when this master was re-executed by an older one (USR2).
        parent = os.environ.pop("FORKSERVE_PARENT_PID", "")
        self.parent_master = int(parent) if parent.isdigit() else 0
        # What hooks get as ``server``: this arbiter with gunicorn's names.
        self.hook_server = ServerView(self)

    @property
    def proc_name(self) -> str:
        return self.cfg.proc_name or self.cfg.wsgi_app or "forkserve"

    @property
    def log(self):
        return error_log

    @property
    def generation(self) -> int:
        """The generation of workers serving now."""
        return self.reloads.current

    @property
    def workers(self) -> dict[int, WorkerRecord]:
        return self.pool.workers

    # -- start -----------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        self.log.info("Starting forkserve %s", _version())
        cfg.on_starting(self.hook_server)
        self.set_title("master")
        self.signals.install()
        inherited = inherited_fds()
        try:
            self.listeners = create_listeners(cfg.bind, cfg.backlog, cfg.reuse_port, inherited)
        except OSError as exc:
            raise HaltServer(str(exc.strerror or exc), 1) from None
        os.environ.pop("FORKSERVE_FDS", None)
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(key, None)
        for lst in self.listeners:
            self.log.info("Listening at: %s (%s)", lst, self.pid)
            if lst.owned_path and (cfg.user is not None or cfg.group is not None):
                # Workers run as user/group: let them (and the proxy in that
                # group) use the socket; its mode comes from umask.
                uid, gid = _ids(cfg.user, cfg.group)
                os.chown(lst.owned_path, uid, gid)
        if cfg.metrics_bind:
            self.control = ControlListener(self, cfg.metrics_bind)
            try:
                # Only a master started by USR2 waits for the address.
                self.control.open(retry=bool(self.parent_master))
            except OSError as exc:
                raise HaltServer(f"metrics_bind {cfg.metrics_bind}: "
                                 f"{exc.strerror or exc}", 1) from None
        self.write_pidfile()
        if cfg.preload_app:
            self.reloads.keep_modules |= frozenset(sys.modules)
            self.app = self.load_app()
            self.log.info("Preloaded the app: %s", detect_kind(self.app))
        if cfg.reload:
            self.watcher = Watcher(watch_roots(cfg.wsgi_app, cfg.pythonpath),
                                   cfg.reload_extra_files, cfg.reload_engine,
                                   self.signals.wake, self.log)
            self.watcher.start()

    def set_title(self, title: str) -> None:
        self.title = title
        try:
            from setproctitle import setproctitle
            setproctitle(f"forkserve: {title} [{self.proc_name}]")
        except ImportError:  # pragma: no cover
            pass

    def load_app(self) -> Any:
        try:
            return load_app(self.cfg.wsgi_app, self.cfg.chdir, self.cfg.pythonpath,
                            self.cfg.worker_class)
        except AppLoadError as exc:
            raise HaltServer(f"App failed to load: {exc}", EXIT_BOOT_FAILED) from None

    def write_pidfile(self) -> None:
        path = self.cfg.pidfile
        if not path:
            return
        tmp = f"{path}.{self.pid}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{self.pid}\n")
        os.replace(tmp, path)
        self.pidfile_path = path

    def remove_pidfile(self) -> None:
        path = self.pidfile_path
        if not path:
            return
        try:
            with open(path) as f:
                if f.read().strip() == str(self.pid):
                    os.unlink(path)
        except OSError:
            pass

    # -- the loop ----------------------------------------------------------

    def run(self) -> None:
        """Start, then supervise until stopped; exits the process."""
        try:
            self.start()
            self.manage_workers()
            while True:
                self.handle_signals()
                self.handle_file_changes()
                self.sleep()
                now = time.monotonic()
                if self.control is not None:
                    self.control.tick(now)
                if self.draining_until is not None and now >= self.draining_until:
                    raise StopIteration
                self.notifier.tick()
                self.reap_workers()
                self.pool.murder()
                self.pool.recycle(self.generation)
                self.reloads.check()
                self.manage_workers()
                self.check_ready()
                self.send_metrics()
        except StopIteration:
            self.halt()
        except KeyboardInterrupt:
            self.halt()
        except HaltServer as exc:
            self.halt(exc.reason, exc.exit_status)
        except SystemExit:
            raise
        except Exception:
            self.log.exception("Unhandled exception in the main loop")
            self.stop(graceful=False)
            self.remove_pidfile()
            sys.exit(1)

    def handle_signals(self) -> None:
        """Handle every pending signal, oldest first, reaping in between."""
        while True:
            self.reap_workers()
            item = self.signals.pending.pop()
            if item is None:
                return
            sig, count = item
            name = NAMES[sig]
            self.log.info("Handling signal: %s%s", name, f" (x{count})" if count > 1 else "")
            getattr(self, f"handle_{name}")(count)

    def handle_file_changes(self) -> None:
        """reload: the app's files changed; roll the workers as a HUP does."""
        changed = self.watcher.take() if self.watcher is not None else []
        if not changed or self.stopping:
            return
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more"
                                          if len(changed) > 3 else "")
        self.log.info("Reloading: %s changed", shown)
        self.reloads.request()

    def sleep(self) -> None:
        """Wait for a signal, a control socket, or the next tick."""
        if self.signals.pending:
            return
        booting = (self.reloads.reloading is not None or not self.ready_announced
                   or self.pool.any_booting())
        timeout = _TICK_BOOTING if booting else _TICK
        now = time.monotonic()
        spawn_at = self.respawn.next_spawn_at(now)
        if spawn_at > now:
            timeout = min(timeout, spawn_at - now)
        if self.control is not None:
            timeout = min(timeout, max(0.0, self.control.next_deadline() - now))
        if self.draining_until is not None:
            timeout = min(timeout, max(0.0, self.draining_until - now))
        self.wait_io(timeout)

    def wait_io(self, timeout: float) -> None:
        """Sleep on the signal pipe and serve the control sockets."""
        for fd in self.signals.wait(timeout, list(self.readers), list(self.writers)):
            call = self.readers.get(fd) or self.writers.get(fd)
            if call is not None:  # an earlier callback may have closed it
                call()

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self.stop()
        if reason:
            self.log.error("Shutting down: %s", reason)
        self.log.info("Shutting down: Master")
        try:
            self.cfg.on_exit(self.hook_server)
        except Exception:
            self.log.exception("on_exit hook failed")
        if self.control is not None:
            self.control.close()
        self.remove_pidfile()
        sys.exit(exit_status)

    def stop(self, graceful: bool = True) -> None:
        """Close the listeners, stop every worker, kill what overstays.

        An INT or QUIT that arrives during a graceful stop turns it into a
        fast one.
        """
        if not self.stopping:
            self.notifier.stopping()
        self.stopping = True
        # Keep the sockets open if a re-exec'd master is taking them over.
        close_listeners(self.listeners, unlink=self.reexec.pid == 0)
        self.listeners = []
        self.pool.stop_all(signal.SIGTERM if graceful else signal.SIGQUIT)
        limit = time.monotonic() + self.cfg.graceful_timeout
        while self.pool.workers and time.monotonic() < limit:
            if graceful and (self.signals.pending.take(signal.SIGINT)
                             + self.signals.pending.take(signal.SIGQUIT)):
                self.log.info("Fast stop asked for during the graceful stop")
                graceful = False
                self.pool.stop_all(signal.SIGQUIT)
            self.reap_workers()
            if self.pool.workers:
                self.wait_io(0.05)
                if self.control is not None:
                    self.control.tick(time.monotonic())
        for pid in list(self.pool.workers):
            self.log.warning("Worker (pid:%s) did not stop within graceful_timeout; killing", pid)
            self.pool.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.pool.workers and time.monotonic() < deadline:
            self.reap_workers()
            if self.pool.workers:
                self.signals.wait(0.02)

    # -- signals -----------------------------------------------------------

    def handle_hup(self, count: int = 1) -> None:
        self.log.info("Hang up: Master")
        self.reloads.request()

    def handle_term(self, count: int = 1) -> None:
        delay = self.cfg.drain_delay
        if delay > 0 and self.draining_until is None and count == 1:
            # Readiness off now; keep serving while load balancers notice.
            self.draining_until = time.monotonic() + delay
            self.log.info("Draining: /readyz answers 503; stopping in %.1fs", delay)
            return
        raise StopIteration

    def handle_int(self, count: int = 1) -> None:
        self.stop(graceful=False)
        raise StopIteration

    handle_quit = handle_int

    def handle_ttin(self, count: int = 1) -> None:
        old = self.num_workers
        self.num_workers += count
        self.manage_workers()
        self.cfg.nworkers_changed(self.hook_server, self.num_workers, old)

    def handle_ttou(self, count: int = 1) -> None:
        old = self.num_workers
        self.num_workers = max(1, self.num_workers - count)
        if self.num_workers == old:
            return
        self.manage_workers()
        self.cfg.nworkers_changed(self.hook_server, self.num_workers, old)

    def handle_usr1(self, count: int = 1) -> None:
        reopen_logs()
        self.pool.kill_all(signal.SIGUSR1)

    def handle_usr2(self, count: int = 1) -> None:
        self.reexec.start()

    def handle_winch(self, count: int = 1) -> None:
        if os.isatty(0):
            self.log.debug("SIGWINCH ignored: on a terminal (resize)")
            return
        self.log.info("Graceful stop of workers")
        old = self.num_workers
        self.num_workers = 0
        self.pool.retire_where(lambda rec: True, "scale_down")
        self.cfg.nworkers_changed(self.hook_server, 0, old)

    # -- workers -----------------------------------------------------------

    def current_workers(self) -> list[WorkerRecord]:
        return self.pool.of_generation(self.generation)

    def manage_workers(self) -> None:
        """Keep the serving generation at strength: start the missing
        workers the respawn policy allows now, retire the surplus."""
        if self.stopping:
            return
        current = self.current_workers()
        missing = self.reloads.target(self.num_workers) - len(current)
        if missing > 0:
            for _ in range(self.respawn.spawn_now(time.monotonic(), missing, self.pool.live())):
                self.pool.spawn(self.generation)
        elif missing < 0:
            # The oldest go first, as in gunicorn.
            for rec in sorted(current, key=lambda w: w.age)[:-missing]:
                self.pool.retire(rec, "scale_down")

    def send_metrics(self) -> None:
        """statsd (with statsd_host): the worker gauge, the backlog."""
        socks = [lst.sock for lst in self.listeners] if self.cfg.enable_backlog_metric else []
        self.statsd_metrics.tick(statsd.current(), len(self.pool.workers), socks,
                                 time.monotonic())

    def reap_workers(self) -> None:
        for rec, how in self.pool.reap(self._other_child_exited):
            self.worker_exited(rec, how)

    def _other_child_exited(self, pid: int, status: int) -> None:
        self.reexec.exited(pid, status)

    def worker_exited(self, rec: WorkerRecord, how: Exit) -> None:
        """Decide what a worker's end means: nothing (asked for, or it
        retired itself), a failed reload, a failed start, or a crash to
        replace now or after a back-off."""
        if self.stopping or how in (Exit.EXPECTED, Exit.LEFT):
            return
        reloading = self.reloads.reloading
        if how in (Exit.BOOT_ERROR, Exit.BOOT_CRASH) and reloading is not None \
                and rec.generation == reloading.generation:
            self.reloads.abort("a new worker failed to boot")
            return
        now = time.monotonic()
        if how is Exit.BOOT_ERROR:
            if rec.generation == self.generation:
                raise HaltServer("Worker failed to boot.", EXIT_BOOT_FAILED)
        elif how is Exit.BOOT_CRASH:
            delay = self.respawn.boot_failed(now)
            self.log.warning("Worker (pid:%s) died before it was ready; next spawn in %.1fs",
                             rec.pid, delay)
        elif self.respawn.serving_crashed(now):
            self.log.warning("Workers keep crashing; replacing them one each %.1fs (at once "
                             "while none is left)", SPACING)
        else:
            self.log.info("Replacing worker (pid:%s) at once", rec.pid)

    def check_ready(self) -> None:
        """Once a worker serves, booting works (no more back-off); announce
        readiness once the first generation serves."""
        current = self.current_workers()
        if self.respawn.boot_backoff and self.pool.any_ready(current):
            self.respawn.booted()
        if self.ready_announced or self.reloads.reloading is not None:
            return
        if current and self.pool.all_ready(current):
            self.ready_announced = True
            self.metrics.booted(time.monotonic() - self.started_at)
            self.cfg.when_ready(self.hook_server)
            self.log.info("Ready: %s worker(s) serving", len(current))
            if self.parent_master:
                # A USR2 handover: systemd must follow the new main process
                # (the unit needs NotifyAccess=all for this message).
                self.notifier.mainpid(self.pid)
            self.notifier.ready(self.status_line())

    def not_ready_because(self) -> str:
        """Why /readyz says 503, or "" when ready: a worker of the serving
        generation is READY and the server is not draining.  During a HUP
        the old generation serves until the new one is ready: ready."""
        if self.stopping:
            return "stopping"
        if self.draining_until is not None:
            return "draining"
        if not self.pool.any_ready(self.current_workers()):
            return "no worker is serving"
        return ""

    def status_line(self) -> str:
        """STATUS= for systemd: workers and requests served."""
        return (f"{len(self.current_workers())} workers, generation {self.generation}, "
                f"{self.pool.requests_served()} requests served by the current workers")


def _ids(user: int | str | None, group: int | str | None) -> tuple[int, int]:
    """(uid, gid) for chown; -1 leaves one unchanged."""
    import grp
    import pwd

    uid = -1 if user is None else user if isinstance(user, int) else pwd.getpwnam(user).pw_uid
    gid = -1 if group is None else group if isinstance(group, int) else grp.getgrnam(group).gr_gid
    return uid, gid


def _version() -> str:
    from . import __version__
    return __version__


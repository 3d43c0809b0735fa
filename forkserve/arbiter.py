"""The arbiter: the master process.

It binds the listening sockets once, forks the workers and supervises them
from one loop: reap the dead, murder the stuck, keep the count, roll
generations on HUP.  Signal handlers only queue the signal; the loop wakes on
the self-pipe that ``signal.set_wakeup_fd`` writes to and handles it there.

Signals:
  HUP   reload config and app; new workers start, old ones drain once the new
        generation is READY.  The listening sockets never close.
  TERM  graceful stop: stop accepting, finish in-flight requests, exit 0.
  INT, QUIT  fast stop.
  TTIN, TTOU  one worker more, one fewer.
  USR1  reopen log files, in the master and every worker.
  USR2  re-execute the master binary, handing it the listening sockets.
  WINCH stop all workers, keep the master (when not on a terminal).
"""

from __future__ import annotations

import gc
import os
import random
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from .app import AppLoadError, detect_kind, load_app
from .config import Config
from .heartbeat import Heartbeat, WorkerState
from .logging import error_log, reopen_logs, setup_logging
from .sockets import Listener, close_listeners, create_listeners, inherited_fds
from .systemd import Notifier
from .workers.base import EXIT_BOOT_ERROR, run_worker, worker_class, worker_kind

__all__ = ["Arbiter", "HaltServer"]

# Where the master started: a USR2 re-exec starts from here again, whatever
# --chdir did since.
START_CWD = os.getcwd()

# Exit statuses of the master.
EXIT_BOOT_FAILED = 3


class HaltServer(Exception):
    """Stop the master with ``exit_status`` after ``reason`` is logged."""

    def __init__(self, reason: str, exit_status: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


@dataclass
class WorkerRecord:
    """What the master knows about one worker."""

    pid: int
    age: int
    generation: int
    heartbeat: Heartbeat
    spawned_at: float
    stopping: bool = False           # told to drain (TERM sent)
    kill_at: float | None = None     # SIGKILL deadline once stopping
    aborted_at: float | None = None  # SIGABRT sent for a timeout
    expected_exit: bool = False      # we asked it to go
    memory_limit: int = 0            # bytes of RSS, jitter included; 0: none
    retire_at: float = 0.0           # max_worker_lifetime deadline; 0: none

    # gunicorn's hooks receive this object as ``worker``.
    @property
    def alive(self) -> bool:
        return not self.stopping


@dataclass
class Reload:
    """A HUP in progress: the new generation booting."""

    generation: int
    deadline: float
    started: float = field(default_factory=time.monotonic)


_SIGNALS = {getattr(signal, f"SIG{name}"): name.lower() for name in
            ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH")}


class Arbiter:
    """The master process; :meth:`run` never returns."""

    def __init__(self, cfg: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.cfg = cfg
        self.reload_config = reload_config
        self.pid = os.getpid()
        self.listeners: list[Listener] = []
        self.workers: dict[int, WorkerRecord] = {}
        self.generation = 0
        self.reloading: Reload | None = None
        self.num_workers = cfg.workers
        self.worker_age = 0
        self.app: Any = None
        # Worker kinds whose modules are imported here for the workers to share.
        self._shared_kinds: set[str] = set()
        self.sig_queue: list[int] = []
        self.ready_announced = False
        self.master_name = "master"
        self.reexec_pid = 0
        self.pidfile_path: str | None = None
        self.backoff = 0.0             # respawn delay after crash loops
        self.next_spawn_at = 0.0
        self.stopping = False
        self.notifier = Notifier()
        # Set when this master was re-executed by an older one (USR2).
        parent = os.environ.pop("FORKSERVE_PARENT_PID", "")
        self.parent_master = int(parent) if parent.isdigit() else 0

    @property
    def proc_name(self) -> str:
        return self.cfg.proc_name or self.cfg.wsgi_app or "forkserve"

    @property
    def log(self):
        return error_log

    # -- start -----------------------------------------------------------

    def start(self) -> None:
        cfg = self.cfg
        self.log.info("Starting forkserve %s", _version())
        cfg.on_starting(self)
        self._set_title()
        self.init_signals()
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
        self.write_pidfile()
        if cfg.preload_app:
            self._preload_modules = frozenset(sys.modules)
            self.app = self.load_app()
            self.log.info("Preloaded the app: %s", detect_kind(self.app))

    def _set_title(self) -> None:
        try:
            from setproctitle import setproctitle
            setproctitle(f"forkserve: {self.master_name} [{self.proc_name}]")
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

    def init_signals(self) -> None:
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in _SIGNALS:
            signal.signal(sig, self.queue_signal)
        signal.signal(signal.SIGCHLD, self.handle_chld)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.set_wakeup_fd(self.pipe_w, warn_on_full_buffer=False)

    def queue_signal(self, sig: int, frame: Any) -> None:
        """Queue the signal; the main loop handles it."""
        if len(self.sig_queue) < 16:
            self.sig_queue.append(sig)

    def handle_chld(self, sig: int, frame: Any) -> None:
        """Nothing to do here: the wake-up fd woke the loop, which reaps."""

    # -- the loop ----------------------------------------------------------

    def run(self) -> None:
        """Start, then supervise until stopped; exits the process."""
        try:
            self.start()
            self.manage_workers()
            while True:
                self.reap_workers()
                if self.sig_queue:
                    sig = self.sig_queue.pop(0)
                    name = _SIGNALS[sig]
                    self.log.info("Handling signal: %s", name)
                    getattr(self, f"handle_{name}")()
                    continue
                self.sleep()
                self.notifier.tick()
                self.reap_workers()
                self.murder_workers()
                self.recycle_workers()
                self.check_reload()
                self.manage_workers()
                self.check_ready()
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

    def sleep(self) -> None:
        """Wait for a signal or a second, whichever first; a twentieth of a
        second while workers boot, so that a new generation takes over (and
        readiness is announced) as soon as it is up."""
        booting = self.reloading is not None or not self.ready_announced or any(
            w.heartbeat.read()[0] is WorkerState.BOOTING for w in self.workers.values())
        try:
            ready, _, _ = select.select([self.pipe_r], [], [], 0.05 if booting else 1.0)
            if ready:
                while os.read(self.pipe_r, 4096):
                    pass
        except BlockingIOError:
            pass
        except InterruptedError:
            pass

    def halt(self, reason: str | None = None, exit_status: int = 0) -> None:
        self.stop()
        if reason:
            self.log.error("Shutting down: %s", reason)
        self.log.info("Shutting down: Master")
        try:
            self.cfg.on_exit(self)
        except Exception:
            self.log.exception("on_exit hook failed")
        self.remove_pidfile()
        sys.exit(exit_status)

    def stop(self, graceful: bool = True) -> None:
        """Close the listeners, stop every worker, kill what overstays."""
        if not self.stopping:
            self.notifier.stopping()
        self.stopping = True
        # Keep the sockets open if a re-exec'd master is taking them over.
        unlink = self.reexec_pid == 0
        close_listeners(self.listeners, unlink=unlink)
        self.listeners = []
        sig = signal.SIGTERM if graceful else signal.SIGQUIT
        limit = time.monotonic() + self.cfg.graceful_timeout
        for rec in list(self.workers.values()):
            self.kill_worker(rec.pid, sig)
            rec.expected_exit = True
        while self.workers and time.monotonic() < limit:
            self.reap_workers()
            if self.workers:
                time.sleep(0.05)
        for pid in list(self.workers):
            self.log.warning("Worker (pid:%s) did not stop within graceful_timeout; killing", pid)
            self.kill_worker(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.workers and time.monotonic() < deadline:
            self.reap_workers()
            time.sleep(0.02)

    # -- signals -----------------------------------------------------------

    def handle_hup(self) -> None:
        self.log.info("Hang up: Master")
        self.reload()

    def handle_term(self) -> None:
        raise StopIteration

    def handle_int(self) -> None:
        self.stop(graceful=False)
        raise StopIteration

    handle_quit = handle_int

    def handle_ttin(self) -> None:
        self.num_workers += 1
        self.manage_workers()
        self.cfg.nworkers_changed(self, self.num_workers, self.num_workers - 1)

    def handle_ttou(self) -> None:
        if self.num_workers <= 1:
            return
        self.num_workers -= 1
        self.manage_workers()
        self.cfg.nworkers_changed(self, self.num_workers, self.num_workers + 1)

    def handle_usr1(self) -> None:
        reopen_logs()
        self.kill_workers(signal.SIGUSR1)

    def handle_usr2(self) -> None:
        self.reexec()

    def handle_winch(self) -> None:
        if os.isatty(0):
            self.log.debug("SIGWINCH ignored: on a terminal (resize)")
            return
        self.log.info("Graceful stop of workers")
        old = self.num_workers
        self.num_workers = 0
        self.stop_generation(lambda rec: True)
        self.cfg.nworkers_changed(self, 0, old)

    # -- workers -----------------------------------------------------------

    def current_workers(self) -> list[WorkerRecord]:
        return [w for w in self.workers.values()
                if w.generation == self.generation and not w.stopping]

    def manage_workers(self) -> None:
        """Keep ``num_workers`` workers in the current generation."""
        if self.stopping:
            return
        current = self.current_workers()
        missing = self.num_workers - len(current)
        if missing > 0:
            if time.monotonic() < self.next_spawn_at:
                return
            for _ in range(missing):
                self.spawn_worker(self.generation)
        elif missing < 0:
            # The oldest go first, as in gunicorn.
            for rec in sorted(current, key=lambda w: w.age)[:-missing]:
                self.retire(rec)

    def spawn_worker(self, generation: int) -> int:
        self.worker_age += 1
        heartbeat = Heartbeat()
        cfg = self.cfg
        now = time.monotonic()
        rec = WorkerRecord(pid=0, age=self.worker_age, generation=generation,
                           heartbeat=heartbeat, spawned_at=now)
        if cfg.max_worker_memory:
            rec.memory_limit = (cfg.max_worker_memory + random.randint(
                0, cfg.max_worker_memory_jitter)) * 1024 * 1024
        if cfg.max_worker_lifetime:
            rec.retire_at = now + cfg.max_worker_lifetime + random.uniform(
                0, cfg.max_worker_lifetime_jitter)
        self.cfg.pre_fork(self, rec)
        self._share_with_workers()
        pid = os.fork()
        if pid == 0:
            # Child: never returns.
            os.close(self.pipe_r)
            os.close(self.pipe_w)
            signal.set_wakeup_fd(-1)
            for other in self.workers.values():
                other.heartbeat.close()
            self.workers = {}
            run_worker(self, rec.age, self.listeners, self.cfg, heartbeat, self.app)
        rec.pid = pid
        self.workers[pid] = rec
        self.log.debug("Spawned worker %s (generation %s)", pid, generation)
        return pid

    def _share_with_workers(self) -> None:
        """Before a fork: import what the workers will run, and freeze the
        heap, so that workers share the master's pages (copy-on-write)
        instead of each building and dirtying its own copy.

        The worker class comes from the config, or from the preloaded app;
        in "auto" mode without --preload only the sync worker is known to be
        light enough to import regardless (the ASGI one brings asyncio and
        uvloop).  gc.freeze() moves every object to the permanent generation:
        a worker's collector then never writes to their headers, which would
        copy each page they sit on (see the gc module on fork without exec).
        """
        kind = self.cfg.worker_class
        if self.app is not None:
            kind = worker_kind(kind, self.app)
        if kind not in self._shared_kinds:
            before = frozenset(sys.modules)
            worker_class("sync")
            if kind == "asgi":
                worker_class("asgi")
                try:
                    import uvloop  # noqa: F401
                except ImportError:  # pragma: no cover - a declared dependency
                    pass
            self._shared_kinds.add(kind)
            # A HUP with --preload forgets the app's modules; not these.
            self._preload_modules |= frozenset(sys.modules) - before
        gc.collect()
        gc.freeze()

    def retire(self, rec: WorkerRecord, sig: int = signal.SIGTERM) -> None:
        """Ask a worker to drain and exit; SIGKILL after graceful_timeout."""
        rec.stopping = True
        rec.expected_exit = True
        rec.kill_at = time.monotonic() + self.cfg.graceful_timeout
        self.kill_worker(rec.pid, sig)

    def stop_generation(self, which: Callable[[WorkerRecord], bool]) -> None:
        for rec in list(self.workers.values()):
            if not rec.stopping and which(rec):
                self.retire(rec)

    def kill_worker(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            self.reap_workers()

    def kill_workers(self, sig: int) -> None:
        for pid in list(self.workers):
            self.kill_worker(pid, sig)

    def reap_workers(self) -> None:
        """Collect exited workers; log how each died; act on boot failures."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid == self.reexec_pid:
                self.log.warning("Re-executed master %s exited (status %s)", pid, status)
                self.reexec_pid = 0
                self._set_title()
                continue
            rec = self.workers.pop(pid, None)
            if rec is None:
                continue
            rec.heartbeat.close()
            self._log_exit(rec, status)
            try:
                self.cfg.child_exit(self, rec)
            except Exception:
                self.log.exception("child_exit hook failed")
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_BOOT_ERROR:
                self._boot_failed(rec)
            elif not rec.expected_exit and not self.stopping:
                self._crashed(rec)

    def _log_exit(self, rec: WorkerRecord, status: int) -> None:
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGKILL and rec.aborted_at is None and not rec.expected_exit:
                self.log.error("Worker (pid:%s) was sent SIGKILL! Perhaps out of memory?", rec.pid)
            elif rec.expected_exit and sig in (signal.SIGTERM, signal.SIGKILL):
                self.log.info("Worker (pid:%s) stopped by %s", rec.pid, name)
            else:
                self.log.error("Worker (pid:%s) was killed by %s", rec.pid, name)
        else:
            code = os.WEXITSTATUS(status)
            if code == 0 and rec.expected_exit:
                self.log.info("Worker exiting (pid: %s)", rec.pid)
            elif code == 0:
                self.log.info("Worker (pid:%s) exited", rec.pid)
            elif code != EXIT_BOOT_ERROR:
                self.log.error("Worker (pid:%s) exited with code %s", rec.pid, code)

    def _boot_failed(self, rec: WorkerRecord) -> None:
        if self.reloading is not None and rec.generation == self.reloading.generation:
            self.abort_reload("a new worker failed to boot")
            return
        if rec.generation != self.generation or self.stopping:
            return
        raise HaltServer("Worker failed to boot.", EXIT_BOOT_FAILED)

    def _crashed(self, rec: WorkerRecord) -> None:
        """Back off when workers keep dying soon after they start."""
        now = time.monotonic()
        if now - rec.spawned_at < 10:
            self.backoff = min(max(self.backoff * 2, 0.1), 10.0)
            self.next_spawn_at = now + self.backoff
            self.log.warning("Worker died %.1fs after start; next spawn in %.1fs",
                             now - rec.spawned_at, self.backoff)
        else:
            self.backoff = 0.0

    def murder_workers(self) -> None:
        """Kill workers whose heartbeat stopped; SIGKILL those that ignore
        SIGABRT or overstay a graceful stop."""
        now = time.monotonic()
        timeout = self.cfg.timeout
        for rec in list(self.workers.values()):
            if rec.kill_at is not None and now >= rec.kill_at:
                self.log.warning("Worker (pid:%s) did not stop within graceful_timeout; killing",
                                 rec.pid)
                rec.kill_at = None
                self.kill_worker(rec.pid, signal.SIGKILL)
                continue
            if rec.aborted_at is not None:
                if now - rec.aborted_at > 2.0:
                    self.kill_worker(rec.pid, signal.SIGKILL)
                continue
            if timeout <= 0:
                continue
            state, idle, _, line = rec.heartbeat.read()
            if idle <= timeout:
                continue
            what = f"on {line.decode('latin-1')!r}" if line else (
                "while booting" if state is WorkerState.BOOTING else "between requests")
            self.log.critical("WORKER TIMEOUT (pid:%s) no progress for %.0fs %s",
                              rec.pid, idle, what)
            rec.aborted_at = now
            rec.expected_exit = True
            self.kill_worker(rec.pid, signal.SIGABRT)

    def recycle_workers(self) -> None:
        """Retire workers past max_worker_memory or max_worker_lifetime;
        manage_workers starts their replacements while they drain."""
        now = time.monotonic()
        for rec in list(self.workers.values()):
            if rec.stopping or rec.generation != self.generation:
                continue
            if rec.retire_at and now >= rec.retire_at:
                self.log.info("Recycling worker (pid:%s): reached max_worker_lifetime (%.0fs)",
                              rec.pid, now - rec.spawned_at)
                self.retire(rec)
                continue
            if rec.memory_limit:
                try:
                    rss = psutil.Process(rec.pid).memory_info().rss
                except psutil.Error:
                    continue
                if rss > rec.memory_limit:
                    self.log.info("Recycling worker (pid:%s): RSS %.1f MiB is over "
                                  "max_worker_memory (%.1f MiB)", rec.pid, rss / 1048576,
                                  rec.memory_limit / 1048576)
                    self.retire(rec)

    def check_ready(self) -> None:
        """Announce readiness once the first generation serves."""
        if self.ready_announced or self.reloading is not None:
            return
        current = self.current_workers()
        if current and all(w.heartbeat.read()[0] is WorkerState.READY for w in current):
            self.ready_announced = True
            self.backoff = 0.0
            self.cfg.when_ready(self)
            self.log.info("Ready: %s worker(s) serving", len(current))
            if self.parent_master:
                # A USR2 handover: systemd must follow the new main process
                # (the unit needs NotifyAccess=all for this message).
                self.notifier.mainpid(self.pid)
            self.notifier.ready(self.status_line())

    # -- reload ------------------------------------------------------------

    def status_line(self) -> str:
        """STATUS= for systemd: workers and requests served."""
        served = sum(w.heartbeat.read()[2] for w in self.workers.values())
        return (f"{len(self.current_workers())} workers, generation {self.generation}, "
                f"{served} requests served by the current workers")

    def reload(self) -> None:
        if self.reloading is not None:
            self.log.warning("Reload already in progress; HUP ignored")
            return
        self.notifier.reloading()
        old_bind = self.cfg.bind
        if self.reload_config is not None:
            try:
                cfg = self.reload_config()
            except Exception as exc:
                self.log.error("Reload failed, keeping the running config: %s", exc)
                self.notifier.ready(self.status_line() + "; last reload failed")
                return
            self.cfg = cfg
            setup_logging(cfg.errorlog, cfg.loglevel, cfg.accesslog)
            if cfg.bind != old_bind:
                self.log.warning("bind changed; new addresses need a restart or USR2 "
                                 "(still listening on %s)", ", ".join(map(str, self.listeners)))
        self.cfg.on_reload(self)
        if self.cfg.preload_app:
            try:
                self.app = self._reload_preloaded_app()
            except Exception as exc:
                self.log.error("Reload failed, the app did not load: %s", exc)
                self.notifier.ready(self.status_line() + "; last reload failed")
                return
        self.num_workers = self.cfg.workers
        # The new generation is pending until all of it is READY;
        # manage_workers keeps the old one at strength meanwhile.
        gen = max(self.generation, max((w.generation for w in self.workers.values()), default=0)) + 1
        boot_limit = max(60.0, 2 * self.cfg.timeout)
        self.reloading = Reload(gen, time.monotonic() + boot_limit)
        for _ in range(self.num_workers):
            self.spawn_worker(gen)

    def _reload_preloaded_app(self) -> Any:
        # Let the old app's cycles be collected (frozen before each fork).
        gc.unfreeze()
        # Forget the modules the app brought in so that they import afresh.
        for name in list(sys.modules):
            if name in self._preload_modules:
                continue
            del sys.modules[name]
        return load_app(self.cfg.wsgi_app, self.cfg.chdir, self.cfg.pythonpath,
                        self.cfg.worker_class)

    _preload_modules: frozenset[str] = frozenset()

    def check_reload(self) -> None:
        r = self.reloading
        if r is None:
            return
        new = [w for w in self.workers.values() if w.generation == r.generation and not w.stopping]
        if time.monotonic() > r.deadline:
            self.abort_reload("the new workers were not ready in time")
            return
        if len(new) < self.num_workers:
            # A new worker died (not a boot failure): replace it.
            self.spawn_worker(r.generation)
            return
        if not all(w.heartbeat.read()[0] is WorkerState.READY for w in new):
            return
        self.reloading = None
        self.generation = r.generation
        self.stop_generation(lambda rec: rec.generation != r.generation)
        self.log.info("Reload complete in %.2fs: %s new worker(s) serving",
                      time.monotonic() - r.started, len(new))
        self.notifier.ready(self.status_line())

    def abort_reload(self, why: str) -> None:
        r = self.reloading
        assert r is not None
        self.reloading = None
        self.log.error("Reload failed (%s); the old workers keep serving", why)
        self.notifier.ready(self.status_line() + "; last reload failed")
        self.stop_generation(lambda rec: rec.generation == r.generation)

    # -- USR2 --------------------------------------------------------------

    def reexec(self) -> None:
        """Start a new master from the current executable, with our sockets."""
        if self.reexec_pid:
            self.log.warning("USR2 ignored: a re-executed master (%s) is running", self.reexec_pid)
            return
        if self.pidfile_path:
            try:
                os.replace(self.pidfile_path, self.pidfile_path + ".oldbin")
                self.pidfile_path += ".oldbin"
            except OSError as exc:
                self.log.error("Cannot rename the pidfile: %s", exc)
        try:
            self.cfg.pre_exec(self)
        except Exception:
            self.log.exception("pre_exec hook failed")
        fds = [lst.fileno() for lst in self.listeners]
        pid = os.fork()
        if pid:
            self.reexec_pid = pid
            self.master_name = "old master"
            self._set_title()
            return
        # Child: becomes the new master.
        env = dict(os.environ)
        env["FORKSERVE_FDS"] = ",".join(map(str, fds))
        env["FORKSERVE_PARENT_PID"] = str(self.pid)
        for fd in fds:
            os.set_inheritable(fd, True)
        signal.set_wakeup_fd(-1)
        for sig in list(_SIGNALS) + [signal.SIGCHLD]:
            signal.signal(sig, signal.SIG_DFL)
        argv0 = sys.argv[0]
        if argv0.endswith("__main__.py") or not os.path.exists(argv0):
            args = [sys.executable, "-m", "forkserve"] + sys.argv[1:]
        else:
            args = [sys.executable, argv0] + sys.argv[1:]
        try:
            os.chdir(START_CWD)
            os.execve(sys.executable, args, env)
        except OSError as exc:
            self.log.error("Re-exec failed: %s", exc)
            os._exit(1)


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


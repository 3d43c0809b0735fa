"""The worker table: fork, reap, signal, and the checks the master makes on
each worker every tick (stuck, over a limit, retiring by itself).

What to do when a worker is gone (respawn now or later, drop a reload, stop
the server) is the arbiter's decision; :meth:`WorkerPool.reap` says how each
one ended (:class:`Exit`).
"""

from __future__ import annotations

import enum
import gc
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import psutil

from ..heartbeat import Heartbeat, WorkerState
from ..workers.base import EXIT_BOOT_ERROR, run_worker
from ..workers.registry import AUTO, modules_to_share, worker_kind
from .signals import blocked

if TYPE_CHECKING:
    from ..arbiter import Arbiter

__all__ = ["WorkerRecord", "WorkerPool", "Exit"]

# How long a worker may ignore SIGABRT (sent for a timeout) before SIGKILL.
_ABORT_GRACE = 2.0


@dataclass
class WorkerRecord:
    """What the master knows about one worker."""

    pid: int
    age: int
    generation: int
    heartbeat: Heartbeat
    spawned_at: float
    stopping: bool = False           # draining: told to (TERM), or retiring by itself
    kill_at: float | None = None     # SIGKILL deadline once stopping
    aborted_at: float | None = None  # SIGABRT sent for a timeout
    expected_exit: bool = False      # we asked it to go, or it said it was going
    memory_limit: int = 0            # bytes of RSS, jitter included; 0: none
    retire_at: float = 0.0           # max_worker_lifetime deadline; 0: none
    exit_reason: str = ""            # why the master asked it to go (metrics)

    # gunicorn's hooks receive this object as ``worker``.
    @property
    def alive(self) -> bool:
        return not self.stopping


class Exit(enum.Enum):
    """How a worker ended, as far as the master is concerned."""

    EXPECTED = "expected"      # asked to go (drain, stop, timeout), or announced it
    LEFT = "left"              # exited 0 on its own before the master noticed it retiring
    BOOT_ERROR = "boot error"  # EXIT_BOOT_ERROR: the app or a hook cannot boot
    BOOT_CRASH = "boot crash"  # died before READY
    CRASH = "crash"            # died while READY: it was serving


class WorkerPool:
    """Every worker of every generation, by PID."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.workers: dict[int, WorkerRecord] = {}
        self.age = 0
        # Worker kinds whose modules are imported here for the workers to share.
        self._shared_kinds: set[str] = set()

    def __len__(self) -> int:
        return len(self.workers)

    def of_generation(self, generation: int) -> list[WorkerRecord]:
        """The workers of ``generation`` that are not stopping."""
        return [w for w in self.workers.values() if w.generation == generation and not w.stopping]

    def live(self) -> int:
        """Workers booting or serving, of any generation."""
        return sum(1 for w in self.workers.values() if not w.stopping)

    @staticmethod
    def all_ready(recs: list[WorkerRecord]) -> bool:
        return all(w.heartbeat.read()[0] is WorkerState.READY for w in recs)

    @staticmethod
    def any_ready(recs: list[WorkerRecord]) -> bool:
        return any(w.heartbeat.read()[0] is WorkerState.READY for w in recs)

    def any_booting(self) -> bool:
        return any(w.heartbeat.read()[0] is WorkerState.BOOTING for w in self.workers.values())

    def requests_served(self) -> int:
        return sum(w.heartbeat.read()[2] for w in self.workers.values())

    # -- birth -----------------------------------------------------------

    def spawn(self, generation: int) -> int:
        """Fork one worker of ``generation``; its PID."""
        arbiter = self.arbiter
        cfg = arbiter.cfg
        self.age += 1
        heartbeat = Heartbeat()
        now = time.monotonic()
        rec = WorkerRecord(pid=0, age=self.age, generation=generation,
                           heartbeat=heartbeat, spawned_at=now)
        if cfg.max_worker_memory:
            rec.memory_limit = (cfg.max_worker_memory + random.randint(
                0, cfg.max_worker_memory_jitter)) * 1024 * 1024
        if cfg.max_worker_lifetime:
            rec.retire_at = now + cfg.max_worker_lifetime + random.uniform(
                0, cfg.max_worker_lifetime_jitter)
        cfg.pre_fork(arbiter.hook_server, arbiter.hook_server.worker(rec))
        self.share_with_workers()
        with blocked():
            pid = os.fork()
            if pid == 0:
                # Child: never returns; run_worker unblocks the signals once
                # the worker's handlers are in place.
                arbiter.signals.close_in_child()
                if arbiter.control is not None:
                    arbiter.control.close_in_child()
                for other in self.workers.values():
                    other.heartbeat.close()
                self.workers = {}
                run_worker(arbiter.hook_server, rec.age, arbiter.listeners, cfg, heartbeat, arbiter.app,
                           rec.memory_limit)
        rec.pid = pid
        self.workers[pid] = rec
        arbiter.log.debug("Spawned worker %s (generation %s)", pid, generation)
        return pid

    def share_with_workers(self) -> None:
        """Before a fork: import what the workers will run, and freeze the
        heap, so that workers share the master's pages (copy-on-write)
        instead of each building and dirtying its own copy.

        The worker kind comes from the config, or from the preloaded app; in
        "auto" mode without --preload the app is not known here, and only
        the sync worker's modules are imported (the commoner kind, and the
        lighter one).  gc.freeze() moves every object to the permanent
        generation: a worker's collector then never writes to their headers,
        which would copy each page they sit on (see the gc module on fork
        without exec).
        """
        arbiter = self.arbiter
        kind = arbiter.cfg.worker_class
        if arbiter.app is not None:
            kind = worker_kind(kind, arbiter.app)
        if kind not in self._shared_kinds:
            before = frozenset(sys.modules)
            for name in modules_to_share("sync" if kind == AUTO else kind):
                try:
                    __import__(name)
                except ImportError:  # an optional speed-up (uvloop) missing
                    pass
            self._shared_kinds.add(kind)
            # A HUP with --preload forgets the app's modules; not these.
            arbiter.reloads.keep_modules |= frozenset(sys.modules) - before
        gc.collect()
        gc.freeze()

    # -- signals to workers -------------------------------------------------

    def kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass  # exited; reap() collects it

    def kill_all(self, sig: int) -> None:
        for pid in list(self.workers):
            self.kill(pid, sig)

    def retire(self, rec: WorkerRecord, reason: str) -> None:
        """Ask a worker to drain and exit; SIGKILL after graceful_timeout.
        ``reason`` is the exit reason the metrics count it under."""
        rec.exit_reason = rec.exit_reason or reason
        rec.stopping = True
        rec.expected_exit = True
        rec.kill_at = time.monotonic() + self.arbiter.cfg.graceful_timeout
        self.kill(rec.pid, signal.SIGTERM)

    def retire_where(self, which: Callable[[WorkerRecord], bool], reason: str) -> None:
        for rec in list(self.workers.values()):
            if not rec.stopping and which(rec):
                self.retire(rec, reason)

    def stop_all(self, sig: int) -> None:
        """Send every worker ``sig`` as part of stopping the server."""
        for rec in list(self.workers.values()):
            rec.exit_reason = rec.exit_reason or "shutdown"
            rec.stopping = True
            rec.expected_exit = True
            self.kill(rec.pid, sig)

    # -- death -------------------------------------------------------------

    def reap(self, other: Callable[[int, int], None]) -> list[tuple[WorkerRecord, Exit]]:
        """Collect exited children; log how each worker ended.  Children
        that are not workers (a re-executed master) go to ``other``."""
        exits = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            rec = self.workers.pop(pid, None)
            if rec is None:
                other(pid, status)
                continue
            hb = rec.heartbeat
            state, _, _, line = hb.read()
            counts, seconds = hb.read_counts(), hb.read_duration_sum()
            kind, retired_because = hb.kind(), hb.retire_reason()
            hb.close()
            how = _classify(rec, status, state)
            self.arbiter.metrics.worker_gone(rec, how, counts, seconds, kind, retired_because)
            self._log_exit(rec, status, how, line)
            try:
                server = self.arbiter.hook_server
                self.arbiter.cfg.child_exit(server, server.worker(rec))
            except Exception:
                self.arbiter.log.exception("child_exit hook failed")
            exits.append((rec, how))
        return exits

    def _log_exit(self, rec: WorkerRecord, status: int, how: Exit, line: bytes) -> None:
        log = self.arbiter.log
        where = ""
        if how is Exit.CRASH:
            where = f" on {line.decode('latin-1')!r}" if line else " between requests"
        elif how is Exit.BOOT_CRASH:
            where = " while booting"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
            if sig == signal.SIGKILL and rec.aborted_at is None and not rec.expected_exit:
                log.error("Worker (pid:%s) was sent SIGKILL%s! Perhaps out of memory?",
                          rec.pid, where)
            elif rec.expected_exit and sig in (signal.SIGTERM, signal.SIGKILL):
                log.info("Worker (pid:%s) stopped by %s", rec.pid, name)
            else:
                log.error("Worker (pid:%s) was killed by %s%s", rec.pid, name, where)
            return
        code = os.WEXITSTATUS(status)
        if code == 0 and rec.expected_exit:
            log.info("Worker exiting (pid: %s)", rec.pid)
        elif code == 0:
            log.info("Worker (pid:%s) exited", rec.pid)
        elif code != EXIT_BOOT_ERROR:
            log.error("Worker (pid:%s) exited with code %s%s", rec.pid, code, where)

    # -- checks, each tick ---------------------------------------------------

    def murder(self) -> None:
        """Kill workers whose heartbeat stopped; SIGKILL those that ignore
        SIGABRT or overstay a drain."""
        log = self.arbiter.log
        now = time.monotonic()
        timeout = self.arbiter.cfg.timeout
        for rec in list(self.workers.values()):
            if rec.kill_at is not None and now >= rec.kill_at:
                log.warning("Worker (pid:%s) did not stop within graceful_timeout; killing",
                            rec.pid)
                rec.kill_at = None
                self.kill(rec.pid, signal.SIGKILL)
                continue
            if rec.aborted_at is not None:
                if now - rec.aborted_at > _ABORT_GRACE:
                    self.kill(rec.pid, signal.SIGKILL)
                continue
            if timeout <= 0:
                continue
            state, idle, _, line = rec.heartbeat.read()
            if idle <= timeout:
                continue
            what = f"on {line.decode('latin-1')!r}" if line else (
                "while booting" if state is WorkerState.BOOTING else "between requests")
            log.critical("WORKER TIMEOUT (pid:%s) no progress for %.0fs %s", rec.pid, idle, what)
            rec.aborted_at = now
            rec.expected_exit = True
            self.kill(rec.pid, signal.SIGABRT)

    def recycle(self, generation: int) -> None:
        """Retire workers of ``generation`` past max_worker_lifetime, or past
        max_worker_memory by the master's own sampling (the worker checks
        itself after each request; this catches growth between requests);
        and take note of workers retiring by themselves, so that their
        replacements start while they drain."""
        log = self.arbiter.log
        now = time.monotonic()
        for rec in list(self.workers.values()):
            if rec.stopping or rec.generation != generation:
                continue
            if rec.heartbeat.read()[0] is WorkerState.STOPPING:
                rec.stopping = True
                rec.expected_exit = True
                rec.kill_at = now + self.arbiter.cfg.graceful_timeout
                log.debug("Worker (pid:%s) is retiring; starting its replacement", rec.pid)
                continue
            if rec.retire_at and now >= rec.retire_at:
                log.info("Recycling worker (pid:%s): reached max_worker_lifetime (%.0fs)",
                         rec.pid, now - rec.spawned_at)
                self.retire(rec, "lifetime")
                continue
            if rec.memory_limit:
                try:
                    rss = psutil.Process(rec.pid).memory_info().rss
                except psutil.Error:
                    continue
                if rss > rec.memory_limit:
                    log.info("Recycling worker (pid:%s): RSS %.1f MiB is over "
                             "max_worker_memory (%.1f MiB)", rec.pid, rss / 1048576,
                             rec.memory_limit / 1048576)
                    self.retire(rec, "memory")


def _classify(rec: WorkerRecord, status: int, state: WorkerState) -> Exit:
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_BOOT_ERROR:
        return Exit.BOOT_ERROR
    if rec.expected_exit:
        return Exit.EXPECTED
    if state is WorkerState.BOOTING:
        # Even with status 0 (an app calling sys.exit() on import): it
        # never served, and starting it again at once would loop.
        return Exit.BOOT_CRASH
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return Exit.LEFT
    return Exit.CRASH

"""Generations and HUP: reload the config and the app without closing a
socket or dropping a request.

A HUP starts a new generation of workers.  The old generation keeps serving
until every new worker is READY; then it is told to drain.  If the new
workers cannot boot (an import error, not READY in time), the reload is
dropped and the old generation keeps serving.  A HUP that arrives while a
reload is under way is not dropped: once the current reload settles
(complete or failed), one more starts, however many HUPs came meanwhile.
"""

from __future__ import annotations

import gc
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..app import load_app
from .. import statsd
from ..logconfig import LogConfigError, configure_logging
from ..workers.registry import AUTO, packages_to_keep, worker_kind

if TYPE_CHECKING:
    from ..arbiter import Arbiter

__all__ = ["Reload", "Generations"]


@dataclass
class Reload:
    """A HUP in progress: the new generation booting."""

    generation: int
    deadline: float
    old_workers: int                 # the old generation's strength meanwhile
    started: float = field(default_factory=time.monotonic)


class Generations:
    """Which generation serves, and the reload that may be booting the next."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.current = 0
        self.reloading: Reload | None = None
        # A HUP came during the reload in progress: one more once it settles.
        self.again = False
        # With --preload: the modules present before the app was imported,
        # which a reload keeps (the worker modules are added as imported).
        self.keep_modules: frozenset[str] = frozenset()

    def request(self) -> None:
        """HUP: reload now, or once the reload in progress settles."""
        if self.reloading is not None:
            if not self.again:
                self.arbiter.log.info("Reload in progress; another one will follow it")
            self.again = True
            return
        self.start()

    def start(self) -> None:
        arbiter = self.arbiter
        log = arbiter.log
        arbiter.notifier.reloading()
        old_bind = arbiter.cfg.bind
        if arbiter.reload_config is not None:
            try:
                cfg = arbiter.reload_config()
            except Exception as exc:
                log.error("Reload failed, keeping the running config: %s", exc)
                arbiter.metrics.reload_done(0.0, ok=False)
                arbiter.notifier.ready(arbiter.status_line() + "; last reload failed")
                return
            arbiter.cfg = cfg
            try:
                configure_logging(cfg)
            except (LogConfigError, OSError) as exc:
                log.error("Reload: the logging settings were not applied: %s", exc)
            statsd.configure(cfg)
            if cfg.bind != old_bind:
                log.warning("bind changed; new addresses need a restart or USR2 "
                            "(still listening on %s)", ", ".join(map(str, arbiter.listeners)))
        arbiter.cfg.on_reload(arbiter.hook_server)
        if arbiter.cfg.preload_app:
            try:
                arbiter.app = self._reload_preloaded_app()
            except Exception as exc:
                log.error("Reload failed, the app did not load: %s", exc)
                arbiter.metrics.reload_done(0.0, ok=False)
                arbiter.notifier.ready(arbiter.status_line() + "; last reload failed")
                return
        old_workers = len(arbiter.pool.of_generation(self.current))
        arbiter.num_workers = arbiter.cfg.workers
        gen = max(self.current, max((w.generation for w in arbiter.pool.workers.values()),
                                    default=0)) + 1
        boot_limit = max(60.0, 2 * arbiter.cfg.timeout)
        self.reloading = Reload(gen, time.monotonic() + boot_limit, old_workers)
        for _ in range(arbiter.num_workers):
            arbiter.pool.spawn(gen)

    def _reload_preloaded_app(self) -> Any:
        cfg = self.arbiter.cfg
        # Let the old app's cycles be collected (frozen before each fork).
        gc.unfreeze()
        # Forget the modules the app brought in so that they import afresh,
        # except packages the worker kind says cannot be imported twice.
        kind = worker_kind(cfg.worker_class, self.arbiter.app)
        keep_packages = packages_to_keep("sync" if kind == AUTO else kind)
        for name in list(sys.modules):
            if name not in self.keep_modules and name.partition(".")[0] not in keep_packages:
                del sys.modules[name]
        return load_app(cfg.wsgi_app, cfg.chdir, cfg.pythonpath, cfg.worker_class)

    def check(self) -> None:
        """Each tick: complete the reload once the new generation serves."""
        r = self.reloading
        if r is None:
            return
        arbiter = self.arbiter
        new = arbiter.pool.of_generation(r.generation)
        if time.monotonic() > r.deadline:
            self.abort("the new workers were not ready in time")
            return
        if len(new) < arbiter.num_workers:
            # A new worker that had been READY died, or TTIN asked for one
            # more: start it in the new generation.
            arbiter.pool.spawn(r.generation)
            return
        if not arbiter.pool.all_ready(new):
            return
        self.reloading = None
        self.current = r.generation
        arbiter.pool.retire_where(lambda rec: rec.generation != r.generation, "reload")
        took = time.monotonic() - r.started
        arbiter.metrics.reload_done(took, ok=True)
        arbiter.log.info("Reload complete in %.2fs: %s new worker(s) serving", took, len(new))
        arbiter.notifier.ready(arbiter.status_line())
        self._settled()

    def abort(self, why: str) -> None:
        """Drop the reload in progress; the old generation keeps serving."""
        r = self.reloading
        assert r is not None
        self.reloading = None
        arbiter = self.arbiter
        arbiter.log.error("Reload failed (%s); the old workers keep serving", why)
        arbiter.notifier.ready(arbiter.status_line() + "; last reload failed")
        arbiter.pool.retire_where(lambda rec: rec.generation == r.generation, "reload")
        arbiter.metrics.reload_done(time.monotonic() - r.started, ok=False)
        self._settled()

    def _settled(self) -> None:
        if self.again:
            self.again = False
            self.arbiter.log.info("Starting the reload asked for during the last one")
            self.start()

    def target(self, num_workers: int) -> int:
        """How many workers the serving generation should have: during a
        reload, no more than it had (new ones belong to the new
        generation)."""
        if self.reloading is None:
            return num_workers
        return min(num_workers, self.reloading.old_workers)

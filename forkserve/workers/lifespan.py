"""The ASGI lifespan protocol for one worker: startup before it serves,
shutdown after its connections drained.

``lifespan = auto`` runs it and carries on if the app does not support it
(it raises, or returns, before answering startup); ``on`` makes that a boot
failure; ``off`` never sends a lifespan scope.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from .. import logging as fs_logging

__all__ = ["Lifespan"]


class _Phase(enum.Enum):
    IDLE = "idle"
    STARTING = "starting"
    STARTED = "started"
    UNSUPPORTED = "unsupported"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Lifespan:
    """Runs the app's lifespan scope as one task for the worker's life."""

    def __init__(self, app: Any, mode: str, log: logging.Logger | None = None) -> None:
        self.app = app
        self.mode = mode
        self.log = log or fs_logging.error_log
        self.state: dict[str, Any] = {}
        self.phase = _Phase.IDLE
        self.message = ""
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup_done = asyncio.Event()
        self._shutdown_done = asyncio.Event()
        self._task: asyncio.Task | None = None

    @property
    def state_or_none(self) -> dict[str, Any] | None:
        return self.state if self.phase is _Phase.STARTED else None

    async def startup(self, timeout: float) -> bool:
        """True if the worker may serve."""
        if self.mode == "off":
            return True
        self.phase = _Phase.STARTING
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        try:
            await asyncio.wait_for(self._startup_done.wait(), timeout or None)
        except asyncio.TimeoutError:
            self.log.error("ASGI lifespan startup did not complete in %.0fs", timeout)
            return False
        if self.phase is _Phase.FAILED:
            self.log.error("ASGI lifespan startup failed%s",
                           f": {self.message}" if self.message else "")
            return False
        if self.phase is _Phase.UNSUPPORTED:
            if self.mode == "on":
                self.log.error("ASGI lifespan is 'on' but the app does not support it")
                return False
            self.log.info("ASGI lifespan not supported by the app; continuing without it")
        return True

    async def abandon(self, timeout: float) -> None:
        """The worker stops before the startup completed (a TERM): cancel
        the app's lifespan task and give it ``timeout`` seconds to end.  No
        shutdown event: the app never started."""
        task = self._task
        self.phase = _Phase.STOPPED
        if task is None or task.done():
            return
        task.cancel()
        await asyncio.wait([task], timeout=timeout)

    async def shutdown(self, timeout: float) -> None:
        if self.phase is not _Phase.STARTED:
            return
        self.phase = _Phase.STOPPING
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._shutdown_done.wait(), timeout or None)
        except asyncio.TimeoutError:
            self.log.error("ASGI lifespan shutdown did not complete in %.0fs", timeout)

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self.phase is _Phase.STARTING:
                if self.mode == "on":
                    self.phase = _Phase.FAILED
                    self.message = f"{type(exc).__name__}: {exc}"
                    self.log.exception("Exception in ASGI lifespan startup")
                else:
                    self.phase = _Phase.UNSUPPORTED
            elif self.phase is _Phase.STOPPING:
                self.log.exception("Exception in ASGI lifespan shutdown")
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        else:
            if self.phase is _Phase.STARTING:
                self.phase = _Phase.UNSUPPORTED
        finally:
            self._startup_done.set()
            self._shutdown_done.set()

    async def _receive(self) -> dict[str, Any]:
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete" and self.phase is _Phase.STARTING:
            self.phase = _Phase.STARTED
            self._startup_done.set()
        elif kind == "lifespan.startup.failed" and self.phase is _Phase.STARTING:
            self.phase = _Phase.FAILED
            self.message = str(message.get("message", ""))
            self._startup_done.set()
        elif kind == "lifespan.shutdown.complete" and self.phase is _Phase.STOPPING:
            self.phase = _Phase.STOPPED
            self._shutdown_done.set()
        elif kind == "lifespan.shutdown.failed" and self.phase is _Phase.STOPPING:
            self.phase = _Phase.STOPPED
            self.log.error("ASGI lifespan shutdown failed: %s", message.get("message", ""))
            self._shutdown_done.set()
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r} in phase {self.phase.value}")

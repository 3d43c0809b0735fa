"""When to replace a worker that died without being asked to.

Two cases, two rules:

- A worker that dies before it is READY (a C extension crashing on import,
  the OOM killer during boot) failed to boot: its replacement waits, 0.1 s
  doubling to 10 s, so that a broken deploy does not become a fork storm.
  The first worker to reach READY ends the back-off.  (A worker that exits
  with EXIT_BOOT_ERROR is a different matter: the arbiter stops, or drops
  the reload, instead of trying again.)
- A worker that dies after it was READY was serving, and requests are
  waiting for it: its replacement starts at once.  Only when such crashes
  are continuous (more than ``CONTINUOUS`` within ``WINDOW`` seconds) are
  replacements spaced out, one each ``SPACING`` seconds, and even then an
  empty pool gets one worker at once: a crashing request never leaves the
  server with no worker at all.

The policy is plain state and arithmetic on the times it is given; the
arbiter asks it how many workers to start now.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RespawnPolicy"]

BOOT_BACKOFF_MIN = 0.1
BOOT_BACKOFF_MAX = 10.0
WINDOW = 10.0
CONTINUOUS = 10
SPACING = 0.5


class RespawnPolicy:
    """Back-off for boot failures, a rate limit for continuous crashes."""

    def __init__(self) -> None:
        self.boot_backoff = 0.0
        self._boot_next = 0.0
        self._crashes: deque[float] = deque()
        self._crash_next = 0.0

    def boot_failed(self, now: float) -> float:
        """A worker died before READY; the delay before the next spawn."""
        self.boot_backoff = min(max(self.boot_backoff * 2, BOOT_BACKOFF_MIN), BOOT_BACKOFF_MAX)
        self._boot_next = now + self.boot_backoff
        return self.boot_backoff

    def booted(self) -> None:
        """A worker reached READY: booting works, no more back-off."""
        self.boot_backoff = 0.0
        self._boot_next = 0.0

    def serving_crashed(self, now: float) -> bool:
        """A READY worker died; True if crashes are now continuous."""
        self._crashes.append(now)
        return self.continuous(now)

    def continuous(self, now: float) -> bool:
        while self._crashes and self._crashes[0] <= now - WINDOW:
            self._crashes.popleft()
        return len(self._crashes) > CONTINUOUS

    def spawn_now(self, now: float, missing: int, live: int) -> int:
        """How many of ``missing`` workers to start now, with ``live``
        workers running (booting or serving, not stopping)."""
        if missing <= 0 or now < self._boot_next:
            return 0
        if not self.continuous(now):
            return missing
        if now < self._crash_next and live > 0:
            return 0
        self._crash_next = now + SPACING
        return 1

    def next_spawn_at(self, now: float) -> float:
        """The earliest time a spawn refused now may be allowed."""
        later = self._boot_next if now < self._boot_next else 0.0
        if self.continuous(now):
            later = max(later, self._crash_next)
        return later

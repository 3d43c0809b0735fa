"""Worker liveness shared with the master.

Each worker gets a small anonymous shared mapping, created by the master
before the fork, so both sides see the same bytes with no file and no
syscall per beat.  The worker writes its state, the monotonic time of its
last proof of progress, its request count, and the request line it is
serving; the master reads them to kill a stuck worker, to know when a new
generation is ready, and to say in the log which request a killed worker
was on.  CLOCK_MONOTONIC is system-wide, so the two processes' clocks agree.
"""

from __future__ import annotations

import enum
import mmap
import struct
import time

__all__ = ["WorkerState", "Heartbeat"]

# state (B), pad, last beat (d), requests served (Q); then the current
# request line, NUL-terminated, so that setting and clearing it is a single
# slice store on the hot path.
_HEADER = struct.Struct("=B7xdQ")
_LINE_MAX = 256
_LINE_AT = _HEADER.size
_SIZE = _HEADER.size + _LINE_MAX + 1


class WorkerState(enum.IntEnum):
    """Where a worker is in its life, as the master sees it."""

    BOOTING = 0
    READY = 1      # app loaded (and lifespan started): serving
    STOPPING = 2   # draining after TERM or a recycle


class Heartbeat:
    """One worker's shared liveness record."""

    __slots__ = ("_map", "_beat", "_requests")

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _SIZE)
        # Typed views write each number with one aligned 8-byte store.  Not
        # struct.pack_into(): it zeroes its target before writing the value,
        # and a master reading in between saw a last beat of 0 ("no progress
        # for <uptime> s") and killed a healthy worker.
        self._beat = memoryview(self._map)[8:16].cast("d")
        self._requests = memoryview(self._map)[16:24].cast("Q")
        self.beat()

    # -- worker side ------------------------------------------------------

    def beat(self) -> None:
        """Record progress now."""
        self._beat[0] = time.monotonic()

    def set_state(self, state: WorkerState) -> None:
        self._map[0] = int(state)
        self.beat()

    def set_requests(self, count: int) -> None:
        self._requests[0] = count

    def set_current(self, line: bytes) -> None:
        """The request line being served now (b"" between requests)."""
        if not line:
            self._map[_LINE_AT] = 0
            return
        line = line[:_LINE_MAX] + b"\0"
        self._map[_LINE_AT:_LINE_AT + len(line)] = line

    # -- master side ------------------------------------------------------

    def read(self) -> tuple[WorkerState, float, int, bytes]:
        """(state, seconds since the last beat, requests served, current request)."""
        state, last, count = _HEADER.unpack_from(self._map, 0)
        raw = self._map[_LINE_AT:_LINE_AT + _LINE_MAX + 1]
        line = raw[:raw.find(b"\0")]
        return WorkerState(state), time.monotonic() - last, count, line

    def close(self) -> None:
        # The views pin the mapping: release them first.
        self._beat.release()
        self._requests.release()
        self._map.close()

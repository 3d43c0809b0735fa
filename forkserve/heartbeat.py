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

# state (B), pad, last beat (d), requests served (Q), request line length (H)
_HEADER = struct.Struct("=B7xdQH")
_LINE_MAX = 256
_SIZE = _HEADER.size + _LINE_MAX


class WorkerState(enum.IntEnum):
    """Where a worker is in its life, as the master sees it."""

    BOOTING = 0
    READY = 1      # app loaded (and lifespan started): serving
    STOPPING = 2   # draining after TERM or a recycle


class Heartbeat:
    """One worker's shared liveness record."""

    __slots__ = ("_map", "_struct_beat", "_struct_req")

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _SIZE)
        self._struct_beat = struct.Struct("=d")
        self._struct_req = struct.Struct("=Q")
        self.beat()

    # -- worker side ------------------------------------------------------

    def beat(self) -> None:
        """Record progress now."""
        self._struct_beat.pack_into(self._map, 8, time.monotonic())

    def set_state(self, state: WorkerState) -> None:
        self._map[0] = int(state)
        self.beat()

    def set_requests(self, count: int) -> None:
        self._struct_req.pack_into(self._map, 16, count)

    def set_current(self, line: bytes) -> None:
        """The request line being served now (b"" between requests)."""
        line = line[:_LINE_MAX]
        self._map[_HEADER.size:_HEADER.size + len(line)] = line
        struct.pack_into("=H", self._map, 24, len(line))

    # -- master side ------------------------------------------------------

    def read(self) -> tuple[WorkerState, float, int, bytes]:
        """(state, seconds since the last beat, requests served, current request)."""
        state, last, count, length = _HEADER.unpack_from(self._map, 0)
        line = bytes(self._map[_HEADER.size:_HEADER.size + min(length, _LINE_MAX)])
        return WorkerState(state), time.monotonic() - last, count, line

    def close(self) -> None:
        self._map.close()

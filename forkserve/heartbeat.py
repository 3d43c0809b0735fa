"""Worker liveness shared with the master.

Each worker gets a small anonymous shared mapping, created by the master
before the fork, so both sides see the same bytes with no file and no
syscall per beat.  The worker writes its state, the monotonic time of its
last proof of progress, its request count, and the request line it is
serving; the master reads them to kill a stuck worker, to know when a new
generation is ready, and to say in the log which request a killed worker
was on.  CLOCK_MONOTONIC is system-wide, so the two processes' clocks agree.

Beside it, the same mapping holds the worker's traffic counters
(:class:`Slot`): plain 64-bit stores by the worker at the end of each
exchange, summed by the master when ``/metrics`` is scraped.  No syscall
and no message per request; the master reads them one last time when it
reaps the worker, so totals survive the worker.  Each counter has one
writer (the worker; with ``--threads`` its threads add under a lock, see
``Worker.counter_lock``).
"""

from __future__ import annotations

import enum
import mmap
import struct
import time
from bisect import bisect_left

__all__ = ["WorkerState", "Heartbeat", "Slot", "DURATION_BUCKETS", "STATUS_CLASSES",
           "WORKER_KINDS", "RetireReason", "COUNTER_SLOTS", "by_status", "by_bucket"]

# state (B), worker kind (B), retire reason (B), pad, last beat (d),
# requests served (Q); then the current request line, NUL-terminated, so
# that setting and clearing it is a single slice store on the hot path;
# then the counters, 8-byte aligned.
_HEADER = struct.Struct("=BBB5xdQ")
_LINE_MAX = 256
_LINE_AT = _HEADER.size
_COUNTS_AT = (_LINE_AT + _LINE_MAX + 1 + 7) // 8 * 8

#: Upper bounds (seconds) of the request duration histogram's buckets; a
#: last, unbounded bucket follows.  Fixed: the same on every worker, so the
#: master can add them up.
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: The ``status_class`` label by index: index = status // 100 (0 when the
#: exchange ended without a valid status, e.g. the client left first).
STATUS_CLASSES = ("none", "1xx", "2xx", "3xx", "4xx", "5xx")
#: The worker kind byte: what a worker became after loading the app.
WORKER_KINDS = ("unknown", "sync", "asgi", "gevent")


_NB = len(DURATION_BUCKETS) + 1  # with the unbounded bucket


class Slot(enum.IntEnum):
    """Index of each 64-bit counter in a worker's shared record."""

    # Exchanges by status class and duration bucket, one grid, so that one
    # increment counts both: STATUS_CLASSES rows of _NB buckets.
    EXCHANGES = 0
    SENT_BYTES = EXCHANGES + len(STATUS_CLASSES) * _NB  # response body bytes
    RECEIVED_BYTES = SENT_BYTES + 1              # request body bytes
    BEGUN = RECEIVED_BYTES + 1                   # exchanges that reached the app
    WS_OPENED = BEGUN + 1
    WS_CLOSED = WS_OPENED + 1
    CONNECTIONS = WS_CLOSED + 1                  # a gauge: open now
    END = CONNECTIONS + 1


#: The counters that only grow (all but the gauge at the end).
COUNTER_SLOTS = int(Slot.CONNECTIONS)
_NCOUNTS = int(Slot.END)
# After the counters, the sum of the durations in seconds, a double: adding
# a float costs less than converting it to an integer first.
_SUM_AT = _COUNTS_AT + 8 * _NCOUNTS
_SIZE = _SUM_AT + 8
_COUNTS = struct.Struct(f"={_NCOUNTS}Q")
_SUM = struct.Struct("=d")
_S_SENT, _S_RECEIVED, _S_BEGUN, _S_WS_OPENED, _S_WS_CLOSED, _S_CONNECTIONS = (
    int(Slot.SENT_BYTES), int(Slot.RECEIVED_BYTES), int(Slot.BEGUN),
    int(Slot.WS_OPENED), int(Slot.WS_CLOSED), int(Slot.CONNECTIONS))


# Where a status class's row of the grid starts, by status // 100 (a status
# outside 100-599 counts as "none").
_ROW = (0, _NB, 2 * _NB, 3 * _NB, 4 * _NB, 5 * _NB, 0, 0, 0, 0)


def by_status(counts: list[int] | tuple[int, ...]) -> list[int]:
    """Exchanges per status class (STATUS_CLASSES order) from the counters."""
    return [sum(counts[i * _NB:(i + 1) * _NB]) for i in range(len(STATUS_CLASSES))]


def by_bucket(counts: list[int] | tuple[int, ...]) -> list[int]:
    """Exchanges per duration bucket (not cumulative) from the counters."""
    return [sum(counts[i * _NB + b] for i in range(len(STATUS_CLASSES))) for b in range(_NB)]


class RetireReason(enum.IntEnum):
    """Why a worker retired by itself (the master knows its own reasons)."""

    NONE = 0
    MAX_REQUESTS = 1
    MEMORY = 2
    MASTER_GONE = 3


class WorkerState(enum.IntEnum):
    """Where a worker is in its life, as the master sees it."""

    BOOTING = 0
    READY = 1      # app loaded (and lifespan started): serving
    STOPPING = 2   # draining after TERM or a recycle


class Heartbeat:
    """One worker's shared liveness record."""

    __slots__ = ("_map", "_beat", "_requests", "counts", "duration_sum")

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, _SIZE)
        # Typed views write each number with one aligned 8-byte store.  Not
        # struct.pack_into(): it zeroes its target before writing the value,
        # and a master reading in between saw a last beat of 0 ("no progress
        # for <uptime> s") and killed a healthy worker.
        self._beat = memoryview(self._map)[8:16].cast("d")
        self._requests = memoryview(self._map)[16:24].cast("Q")
        #: The counters as 64-bit integers (the worker's view; see Slot).
        self.counts = memoryview(self._map)[_COUNTS_AT:_SUM_AT].cast("Q")
        self.duration_sum = memoryview(self._map)[_SUM_AT:_SIZE].cast("d")
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

    def set_kind(self, kind: str) -> None:
        """What this worker became: "sync" or "asgi"."""
        self._map[1] = WORKER_KINDS.index(kind) if kind in WORKER_KINDS else 0

    def set_retire_reason(self, reason: RetireReason) -> None:
        self._map[2] = int(reason)

    def count_exchange(self, status: int, duration: float, sent: int, received: int) -> None:
        """One exchange ended: the hot path, plain stores into shared memory."""
        counts = self.counts
        cls = status // 100
        counts[(_ROW[cls] if cls < 10 else 0) + bisect_left(DURATION_BUCKETS, duration)] += 1
        self.duration_sum[0] += duration
        if sent:
            counts[_S_SENT] += sent
        if received:
            counts[_S_RECEIVED] += received

    def count_begun(self) -> None:
        self.counts[_S_BEGUN] += 1

    def count_websocket(self, opened: bool) -> None:
        self.counts[_S_WS_OPENED if opened else _S_WS_CLOSED] += 1

    def set_connections(self, n: int) -> None:
        self.counts[_S_CONNECTIONS] = n

    # -- master side ------------------------------------------------------

    def kind(self) -> str:
        k = self._map[1]
        return WORKER_KINDS[k] if k < len(WORKER_KINDS) else "unknown"

    def retire_reason(self) -> RetireReason:
        r = self._map[2]
        return RetireReason(r) if r in RetireReason._value2member_map_ else RetireReason.NONE

    def read_counts(self) -> tuple[int, ...]:
        """Every counter, indexed by :class:`Slot`."""
        return _COUNTS.unpack_from(self._map, _COUNTS_AT)

    def read_duration_sum(self) -> float:
        """Seconds of all exchanges counted, added up."""
        return _SUM.unpack_from(self._map, _SUM_AT)[0]

    def read(self) -> tuple[WorkerState, float, int, bytes]:
        """(state, seconds since the last beat, requests served, current request)."""
        state, _, _, last, count = _HEADER.unpack_from(self._map, 0)
        raw = self._map[_LINE_AT:_LINE_AT + _LINE_MAX + 1]
        line = raw[:raw.find(b"\0")]
        return WorkerState(state), time.monotonic() - last, count, line

    def close(self) -> None:
        # The views pin the mapping: release them first.
        for view in (self._beat, self._requests, self.counts, self.duration_sum):
            view.release()
        self._map.close()

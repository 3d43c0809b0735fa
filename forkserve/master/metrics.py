"""What the master knows, as metric families for ``/metrics``.

Traffic counters live in each worker's shared record (``heartbeat.py``);
this sums them on a scrape, adds the totals kept from workers that have
exited (:meth:`Metrics.worker_gone`, called when a worker is reaped), so
that no counter goes backwards across a crash, a recycle or a reload, and
adds what only the master knows: workers by state, exits by reason,
reloads, the accept queues.  Nothing here runs per request.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TYPE_CHECKING

import psutil

from ..exposition import Family
from ..heartbeat import (COUNTER_SLOTS, DURATION_BUCKETS, STATUS_CLASSES, WORKER_KINDS,
                         RetireReason, Slot, WorkerState, by_bucket, by_status)
from ..sockets import listen_queue

if TYPE_CHECKING:
    from ..arbiter import Arbiter
    from .pool import Exit, WorkerRecord

__all__ = ["Metrics", "EXIT_REASONS"]

#: The ``reason`` label of forkserve_worker_exits_total; every value is
#: always exported, so the series exist from the first scrape.
EXIT_REASONS = ("timeout", "crash", "boot_error", "max_requests", "memory", "lifetime",
                "reload", "scale_down", "shutdown", "master_gone", "exited")
_RETIRE_REASONS = {RetireReason.MAX_REQUESTS: "max_requests", RetireReason.MEMORY: "memory",
                   RetireReason.MASTER_GONE: "master_gone"}
# At most this long reading workers' RSS on one scrape (psutil reads /proc).
_RSS_BUDGET = 0.2
class Metrics:
    """Totals kept across worker exits, reload history, and the scrape."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.started = time.time()
        # Counters of exited workers, by worker kind.
        self.retained: dict[str, list[int]] = {k: [0] * COUNTER_SLOTS for k in WORKER_KINDS}
        self.retained_seconds: dict[str, float] = {k: 0.0 for k in WORKER_KINDS}
        self.exits: Counter[str] = Counter()
        self.reloads = 0
        self.reloads_failed = 0
        self.last_reload_seconds = 0.0
        self.generation_boot_seconds = 0.0

    # -- events, from the master's loop ---------------------------------------

    def worker_gone(self, rec: WorkerRecord, how: Exit, counts: tuple[int, ...], seconds: float,
                    kind: str, retire_reason: RetireReason) -> None:
        """A reaped worker: keep its final counts, count its exit."""
        kept = self.retained[kind]
        for i in range(COUNTER_SLOTS):
            kept[i] += counts[i]
        self.retained_seconds[kind] += seconds
        self.exits[exit_reason(rec, how, retire_reason)] += 1

    def reload_done(self, seconds: float, ok: bool) -> None:
        self.reloads += 1
        if ok:
            self.last_reload_seconds = seconds
            self.generation_boot_seconds = seconds
        else:
            self.reloads_failed += 1

    def booted(self, seconds: float) -> None:
        """The first generation is serving, ``seconds`` after the start."""
        self.generation_boot_seconds = seconds

    # -- the scrape ---------------------------------------------------------------

    def collect(self) -> list[Family]:
        """Every metric family, now."""
        arbiter = self.arbiter
        totals = {k: list(v) for k, v in self.retained.items()}
        seconds = dict(self.retained_seconds)
        in_progress: Counter[str] = Counter()
        connections: Counter[str] = Counter()
        states: Counter[str] = Counter()
        for rec in list(arbiter.pool.workers.values()):
            hb = rec.heartbeat
            state = hb.read()[0]
            states["stopping" if rec.stopping or state is WorkerState.STOPPING
                   else state.name.lower()] += 1
            kind = hb.kind()
            counts = hb.read_counts()
            acc = totals[kind]
            for i in range(COUNTER_SLOTS):
                acc[i] += counts[i]
            seconds[kind] += hb.read_duration_sum()
            ended = sum(by_status(counts))
            in_progress[kind] += max(0, counts[Slot.BEGUN] - ended)
            connections[kind] += counts[Slot.CONNECTIONS]
        kinds = [k for k in WORKER_KINDS if k != "unknown" or any(totals[k])]

        fams: list[Family] = []
        f = Family("forkserve_requests", "counter",
                   "HTTP requests whose exchange ended, by worker kind and status class.")
        for k in kinds:
            for cls, n in zip(STATUS_CLASSES, by_status(totals[k])):
                f.add(n, (("kind", k), ("status_class", cls)))
        fams.append(f)
        f = Family("forkserve_request_duration_seconds", "histogram",
                   "Time from a request's head received to its response's end.", "seconds")
        for k in kinds:
            t = totals[k]
            f.add_histogram((("kind", k),), DURATION_BUCKETS,
                            by_bucket(t),
                            seconds[k])
        fams.append(f)
        f = Family("forkserve_requests_in_progress", "gauge",
                   "Requests in the app now (WebSockets not included).")
        for k in kinds:
            f.add(in_progress[k], (("kind", k),))
        fams.append(f)
        f = Family("forkserve_connections_open", "gauge",
                   "Client connections open in the workers (updated once a worker tick).")
        for k in kinds:
            f.add(connections[k], (("kind", k),))
        fams.append(f)
        ws_open = sum(max(0, totals[k][Slot.WS_OPENED] - totals[k][Slot.WS_CLOSED])
                      for k in kinds)
        f = Family("forkserve_websockets_open", "gauge", "WebSocket sessions open now.")
        f.add(ws_open)
        fams.append(f)
        f = Family("forkserve_websockets", "counter", "WebSocket sessions started.")
        f.add(sum(totals[k][Slot.WS_OPENED] for k in kinds))
        fams.append(f)
        f = Family("forkserve_received_bytes", "counter",
                   "Request body bytes handed to the app.", "bytes")
        for k in kinds:
            f.add(totals[k][Slot.RECEIVED_BYTES], (("kind", k),))
        fams.append(f)
        f = Family("forkserve_sent_bytes", "counter",
                   "Response body bytes written to clients.", "bytes")
        for k in kinds:
            f.add(totals[k][Slot.SENT_BYTES], (("kind", k),))
        fams.append(f)

        f = Family("forkserve_workers", "gauge", "Worker processes by state.")
        for s in ("booting", "ready", "stopping"):
            f.add(states[s], (("state", s),))
        fams.append(f)
        f = Family("forkserve_workers_desired", "gauge",
                   "Workers the master keeps running (workers, TTIN, TTOU).")
        f.add(arbiter.num_workers)
        fams.append(f)
        f = Family("forkserve_worker_exits", "counter", "Worker processes ended, by reason.")
        for r in EXIT_REASONS:
            f.add(self.exits[r], (("reason", r),))
        fams.append(f)
        rss_sum, rss_max = self._rss()
        f = Family("forkserve_workers_resident_memory_bytes", "gauge",
                   "Resident memory of all workers together.", "bytes")
        f.add(rss_sum)
        fams.append(f)
        f = Family("forkserve_worker_resident_memory_max_bytes", "gauge",
                   "Resident memory of the largest worker.", "bytes")
        f.add(rss_max)
        fams.append(f)
        f = Family("forkserve_generation", "gauge",
                   "The generation of workers serving now (one more per completed HUP).")
        f.add(arbiter.generation)
        fams.append(f)
        f = Family("forkserve_reloads", "counter", "Reloads (HUP) started and settled.")
        f.add(self.reloads)
        fams.append(f)
        f = Family("forkserve_reload_failures", "counter",
                   "Reloads that failed; the old workers kept serving.")
        f.add(self.reloads_failed)
        fams.append(f)
        f = Family("forkserve_last_reload_duration_seconds", "gauge",
                   "How long the last successful reload took, HUP to new generation serving.",
                   "seconds")
        f.add(self.last_reload_seconds)
        fams.append(f)
        f = Family("forkserve_generation_boot_duration_seconds", "gauge",
                   "How long the serving generation took from its first fork to all ready.",
                   "seconds")
        f.add(self.generation_boot_seconds)
        fams.append(f)

        depth = Family("forkserve_listen_queue_length", "gauge",
                       "Connections waiting in a listening TCP socket's accept queue.")
        limit = Family("forkserve_listen_queue_limit", "gauge",
                       "The accept queue's limit (backlog, as the kernel capped it).")
        for lst in arbiter.listeners:
            q = listen_queue(lst.sock)
            if q is not None:
                depth.add(q[0], (("listener", str(lst)),))
                limit.add(q[1], (("listener", str(lst)),))
        fams += [depth, limit]

        f = Family("process_start_time_seconds", "gauge",
                   "Start time of the master since the Unix epoch.", "seconds")
        f.add(self.started)
        fams.append(f)
        f = Family("forkserve_build", "info", "forkserve's version and Python's.")
        from .. import __version__
        f.add(1, (("version", __version__),
                  ("python", ".".join(map(str, sys.version_info[:3])))))
        fams.append(f)
        return fams

    def _rss(self) -> tuple[int, int]:
        total = biggest = 0
        deadline = time.monotonic() + _RSS_BUDGET
        for pid in list(self.arbiter.pool.workers):
            if time.monotonic() > deadline:
                break
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
            total += rss
            biggest = max(biggest, rss)
        return total, biggest


def exit_reason(rec: WorkerRecord, how: Exit, retire_reason: RetireReason) -> str:
    """The ``reason`` label for a worker that ended."""
    from .pool import Exit

    if rec.aborted_at is not None:
        return "timeout"
    if rec.exit_reason:
        return rec.exit_reason
    if retire_reason in _RETIRE_REASONS:
        return _RETIRE_REASONS[retire_reason]
    if how is Exit.BOOT_ERROR:
        return "boot_error"
    if how in (Exit.CRASH, Exit.BOOT_CRASH):
        return "crash"
    if how is Exit.EXPECTED:
        return "shutdown"
    return "exited"

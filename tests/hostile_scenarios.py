"""The attacks of issue 12 as scenarios: each runs one attack against a
server that is already running and returns what it measured.

tests/e2e/test_hostile.py runs them against forkserve and asserts the
invariants; tests/hostile_peers.py runs them against gunicorn and uvicorn
and prints a table.  A server is anything with ``port``, ``workers()`` (its
worker PIDs), ``log`` (its error log text), ``signal(sig)`` and
``wait_exit(timeout)``: the ``Server`` of tests/conftest.py, or the peers'.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import psutil

from attacks import (BODY_ENDS_EARLY, BODY_ERRORS, CHUNK_SIZE_WHITESPACE, Availability, Prober,
                     RSSWatch, Slowloris, Trickler, answered, connect, every, exchange, get,
                     idle_flood, pipelined, read_response, read_until_close, status_of,
                     ws_close_code, ws_flood_before_accept, ws_open)

MiB = 1 << 20


def addr_of(server: Any) -> tuple[str, int]:
    return ("127.0.0.1", server.port)


def wait_until(predicate: Callable[[], Any], timeout: float) -> Any:
    """``predicate()`` once truthy, or its last value after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(0.05)


def _elapsed_until_exit(server: Any, timeout: float) -> float:
    start = time.monotonic()
    try:
        server.wait_exit(timeout)
    except subprocess.TimeoutExpired:
        pass
    return time.monotonic() - start


# -- 1 ------------------------------------------------------------------------


def body_errors(server: Any) -> dict[str, dict[str, Any]]:
    """Each body the reader refuses midway, to an app that catches the read
    error: per input, the status (None: closed unanswered), how long until
    the connection closed, and whether the worker survived it."""
    addr = addr_of(server)
    outcomes = {}
    for name, data in BODY_ERRORS.items():
        pid = get(addr, "/pid", timeout=10)[1]
        start = time.monotonic()
        raw = exchange(addr, data, timeout=8, half_close=name in BODY_ENDS_EARLY)
        elapsed = time.monotonic() - start
        status = status_of(raw)
        time.sleep(0.3)
        # A new client waits in the backlog while a dead worker is replaced.
        try:
            kept = get(addr, "/pid", timeout=10)[1] == pid
        except OSError:
            kept = False
        outcomes[name] = {"status": status, "closed in": round(elapsed, 1), "worker kept": kept,
                          "answered": (status is not None and 400 <= status < 600)
                          or (raw == b"" and name in BODY_ENDS_EARLY)}
    return outcomes


# -- 2 ------------------------------------------------------------------------


def segfault_every(server: Any, interval: float = 2.0, seconds: float = 16.0) -> Availability:
    """A request that segfaults its worker every ``interval`` seconds while
    a probe asks every 50 ms (3 s timeout)."""
    addr = addr_of(server)
    segv = b"GET /segv HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    stop = threading.Event()
    with Prober(addr, "/", interval=0.05, timeout=3.0) as prober:
        crasher = every(interval, lambda: exchange(addr, segv, timeout=3), stop)
        time.sleep(seconds)
        stop.set()
        crasher.join(5)
    return prober.result


# -- 3 ------------------------------------------------------------------------


def pipelined_sleeps(server: Any, count: int = 6) -> list:
    """``count`` pipelined 1-second requests on one connection: the answers
    ((status, body), or the error that ended them)."""
    answers: list = []
    with connect(addr_of(server), 15) as s:
        s.sendall(pipelined("/sleep?1", count))
        buf = bytearray()
        try:
            for _ in range(count):
                answers.append(read_response(s, buf)[::2])
        except OSError as exc:
            answers.append(type(exc).__name__)
    return answers


# -- 4 ------------------------------------------------------------------------


@dataclass
class Probes:
    answered: list[bool] = field(default_factory=list)
    elapsed: float = 0.0

    def __str__(self) -> str:
        return f"{sum(self.answered)}/{len(self.answered)} answered in {self.elapsed:.1f}s"


def _probe(addr: tuple[str, int], count: int = 4, timeout: float = 3.0) -> Probes:
    start = time.monotonic()
    got = [answered(addr, "/", timeout=timeout) for _ in range(count)]
    return Probes(got, time.monotonic() - start)


def trickled_body_ignored(server: Any) -> tuple[bool, Probes]:
    """Content-Length 10 GiB at a byte every half second to an app that
    answers without reading: (the app answered or the server ended the
    trickle, 4 other clients' probes)."""
    addr = addr_of(server)
    trickler = Trickler(addr, "/ignore-body", interval=0.5)
    try:
        app_answered = bool(wait_until(
            lambda: b"ignored" in trickler.response or trickler.closed_by_server, 5))
        probes = _probe(addr, timeout=4)
    finally:
        trickler.stop()
    return app_answered, probes


# -- 5, 6 ---------------------------------------------------------------------


def term_during_import(server: Any, timeout: float = 14.0) -> float:
    """TERM half a second after the workers were forked (they import the app
    for a few seconds): seconds until the master exited (``timeout`` if it
    did not)."""
    wait_until(lambda: len(server.workers()) >= 1, 10)
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    return _elapsed_until_exit(server, timeout)


@dataclass
class TermQueued:
    elapsed: float
    in_flight: int | None
    queued: list[bytes]

    @property
    def queued_answered(self) -> int:
        return sum(1 for raw in self.queued if raw)

    def __str__(self) -> str:
        return (f"exit {self.elapsed:.1f}s after TERM, in flight: {self.in_flight}, "
                f"queued answered {self.queued_answered}/3")


def term_with_queued(server: Any) -> TermQueued:
    """One worker busy for a second; meanwhile a 2 s request and three more
    queue up; TERM half a second into the one in flight."""
    addr = addr_of(server)

    def request(seconds: float) -> socket.socket:
        s = connect(addr, 15)
        s.sendall(b"GET /sleep?%g HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % seconds)
        return s
    warmup = request(1)
    time.sleep(0.2)
    in_flight = request(2)
    time.sleep(0.2)
    queued = [request(2) for _ in range(3)]
    try:
        read_until_close(warmup)
        time.sleep(0.5)
        server.signal(signal.SIGTERM)
        elapsed = _elapsed_until_exit(server, 15)
        first = status_of(read_until_close(in_flight))
        others = [read_until_close(s) for s in queued]
    finally:
        for s in [warmup, in_flight, *queued]:
            s.close()
    return TermQueued(elapsed, first, others)


# -- 7 ------------------------------------------------------------------------


@dataclass
class HupDuringReload:
    settled: bool              # every worker from before the second HUP exited
    served: list[bytes | None]  # three requests afterwards

    def __str__(self) -> str:
        last = self.served[-1] if self.served else None
        return f"serves {last.decode() if last else 'nothing'}" + (
            "" if self.settled else " (old workers still running)")


def hup_during_reload(server: Any, deploy: Callable[[str, float], None],
                      timeout: float = 15.0) -> HupDuringReload:
    """Deploy v2 (a 3 s import) + HUP, then v3 + HUP a second later; once
    it has settled (back to as many workers as before, none of them one
    that ran when the second HUP came), the versions three requests get
    (v3 expected).

    Until it settles an older version answering is no fault: new workers
    serve as soon as they are READY, before the master retires the old
    ones, and a retiring worker finishes what it accepted before it saw the
    TERM.  A dropped HUP shows as never settling (the v2 workers stay)."""
    addr = addr_of(server)

    def version() -> bytes | None:
        try:
            return get(addr, "/version", timeout=3)[1]
        except OSError:
            return None
    count = len(server.workers())
    deploy("v2", 3)
    server.signal(signal.SIGHUP)
    time.sleep(1.0)
    # v2's workers are forked (forkserve: still importing for 2 s more).
    wait_until(lambda: len(server.workers()) > count, 2.0)
    deploy("v3", 0)
    seen = set(server.workers())  # v1's and v2's
    server.signal(signal.SIGHUP)

    def settled() -> bool:
        pids = set(server.workers())
        return len(pids) == count and not pids & seen
    ok = bool(wait_until(settled, timeout))
    return HupDuringReload(ok, [version() for _ in range(3)])


# -- 8 ------------------------------------------------------------------------


def leak_under_load(server: Any, seconds: float = 6.0, kill_above: int = 400 * MiB) -> RSSWatch:
    """Two clients looping on a 5 MiB-per-request leak; the peak RSS of a
    worker (past ``kill_above`` the worker is killed: see RSSWatch)."""
    addr = addr_of(server)
    stop = threading.Event()
    with RSSWatch(server.workers, interval=0.01, kill_above=kill_above) as watch:
        clients = [every(0.0, lambda: get(addr, "/leak?5", timeout=5), stop) for _ in range(2)]
        time.sleep(seconds)
        stop.set()
        for t in clients:
            t.join(10)
    return watch


# -- 9 ------------------------------------------------------------------------


def ws_flood(server: Any, cap: int = 450 * MiB) -> tuple[int, int, bool]:
    """Frames pushed for 3 s at an app that accepts after 5 s: (bytes the
    server took, worker RSS growth, worker killed by the watch)."""
    worker = server.workers()[0]
    base = psutil.Process(worker).memory_info().rss
    with RSSWatch(lambda: [worker], interval=0.01, kill_above=base + cap + 50 * MiB) as watch:
        sent = ws_flood_before_accept(addr_of(server), "/ws-wait?5", seconds=3, cap=cap)
    return sent, watch.peak - base, bool(watch.killed)


def ws_protocol_error(server: Any, frame: bytes) -> int | None:
    """The close code the server answers ``frame`` with (None: TCP closed
    with no close frame)."""
    sock, pending = ws_open(addr_of(server), "/ws")
    with sock:
        sock.settimeout(5)
        sock.sendall(frame)
        return ws_close_code(sock, pending)


# -- 10 -----------------------------------------------------------------------


def huge_user_agents(server: Any, count: int = 100) -> tuple[float, int]:
    """``count`` requests with a 6 KB User-Agent, one connection each, each
    answer awaited up to 5 s, stopping at the first that is not answered:
    (seconds, answered)."""
    addr = addr_of(server)
    ua = [("User-Agent", "A" * 6000)]
    done = 0
    start = time.monotonic()
    try:
        for _ in range(count):
            if get(addr, "/", timeout=5, headers=ua)[0] != 200:
                break
            done += 1
    except OSError:
        pass
    return time.monotonic() - start, done


# -- 11 -----------------------------------------------------------------------


_EMFILE_LOGGED = re.compile(r"Too many open files|EMFILE|out of (file )?descriptors|pausing accept",
                            re.I)


@dataclass
class Emfile:
    logged: bool
    late: bytes
    worker: int

    @property
    def late_served(self) -> bool:
        """The late client was answered by the worker that ran out."""
        return status_of(self.late) == 200 and self.late.endswith(str(self.worker).encode())

    def __str__(self) -> str:
        if self.late_served:
            late = "served"
        elif status_of(self.late) == 200:
            late = "served by a new worker (the old one died)"
        else:
            late = f"got {self.late[:20]!r}"
        return f"{'logged' if self.logged else 'not logged'}, a client waiting meanwhile {late}"


def emfile(server: Any, limit: int = 48, held: int = 80) -> Emfile:
    """RLIMIT_NOFILE of the (one) worker lowered to ``limit``, ``held`` idle
    connections opened; a late client sends a request, then the held ones
    close."""
    addr = addr_of(server)
    worker = server.workers()[0]
    psutil.Process(worker).rlimit(psutil.RLIMIT_NOFILE, (limit, limit))
    socks = []
    try:
        for _ in range(held):
            socks.append(connect(addr, 5))
        logged = bool(wait_until(lambda: _EMFILE_LOGGED.search(server.log), 10))
        late = connect(addr, 15)
        late.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        time.sleep(1.0)
    finally:
        for s in socks:
            s.close()
    with late:
        raw = read_until_close(late)
    return Emfile(logged, raw, worker)


def slowloris(server: Any, count: int = 1200) -> Probes:
    """``count`` clients dribbling a never-ending head; 4 probes."""
    addr = addr_of(server)
    loris = Slowloris(addr, count, interval=1.0)
    try:
        time.sleep(1.5)
        return _probe(addr)
    finally:
        loris.close()


@dataclass
class Flood:
    opened: int
    probes: Probes
    peak_rss: int
    killed: bool

    def __str__(self) -> str:
        return (f"{self.opened} open, probes {self.probes}, "
                f"peak worker RSS {self.peak_rss / MiB:.0f} MiB")


def idle_connections(server: Any, count: int = 10000) -> Flood:
    """``count`` connections that send nothing; 4 probes; worker RSS."""
    addr = addr_of(server)
    with RSSWatch(server.workers, interval=0.1, kill_above=1024 * MiB) as watch:
        socks = idle_flood(addr, count, deadline=8)
        try:
            probes = _probe(addr)
        finally:
            for s in socks:
                s.close()
    return Flood(len(socks), probes, watch.peak, bool(watch.killed))


def chunk_size_whitespace(server: Any) -> dict[str, int | None]:
    """The status for each chunk-size line with trailing whitespace."""
    addr = addr_of(server)
    return {name: status_of(exchange(addr, data, timeout=5))
            for name, data in CHUNK_SIZE_WHITESPACE.items()}

"""A bounded, deterministic wire fuzzer against both worker kinds.

Seeded random requests (tests/fuzzing.py), valid ones and mutated ones,
go over real loopback sockets to a real forkserve serving
tests/apps/fuzz_target.py, whose WSGI and ASGI apps read the whole body and,
like Django and Flask, catch an error while reading it and answer 400.
Each case is one connection: a single write, a random split into several
writes (some with pauses, so the server reads them apart), or a pipeline
of several requests; then the client shuts its sending side and reads
until the server closes.

Every case must hold:

* the reply, parsed by h11 as the client, is a sequence of well-formed,
  complete responses (or nothing: a close), with statuses the server and
  app may give (never a 500: the app does not fail);
* the requests the app served (method, raw path, body length) are exactly
  those the sans-I/O reader reads from the same bytes, in order, up to
  where the server stops: the worker's I/O never frames a request another
  way, and nothing is smuggled or lost;
* the worker that served it is still alive (PIDs unchanged);
* and, at the end, no traceback or error line in the server's log.

``FORKSERVE_FUZZ_COUNT`` sets the number of cases per worker kind (default
1200, a few thousand in all); ``FORKSERVE_FUZZ_SEED`` the first seed.
A failure names the case's seed: ``case(seed)`` rebuilds it.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from typing import NamedTuple

import h11
import pytest

from conftest import APPS, ROOT, free_port, stop_tree, wait_for
from forkserve.http.request import (PAUSED, EndOfMessage, HTTPError, Request,
                                    RequestReader)
from fuzzing import mutate, random_ops, random_request

pytestmark = pytest.mark.e2e

COUNT = int(os.environ.get("FORKSERVE_FUZZ_COUNT", "1200"))
FIRST_SEED = int(os.environ.get("FORKSERVE_FUZZ_SEED", "0"))
# Statuses the server (refusals) or the app (200, or 400 for a body it
# could not read) may answer with, and 100 Continue.
ALLOWED = {100, 200, 400, 408, 413, 414, 417, 431, 501, 505}
# A worker death stops the run after this many: each one costs a respawn.
MAX_DEATHS = 3


class Case(NamedTuple):
    seed: int
    data: bytes
    pieces: list[bytes]
    pause: bool  # sleep between writes, so the server reads them apart


def case(seed: int) -> Case:
    """The deterministic case for ``seed``."""
    rng = random.Random(seed)
    count = 1 if rng.random() < 0.6 else rng.randint(2, 4)
    requests = [random_request(rng, keep_alive=i < count - 1 or rng.random() < 0.5)
                for i in range(count)]
    # Most cases mutate one request of the pipeline, some stay valid.
    if rng.random() < 0.85:
        i = rng.randrange(count)
        requests[i] = mutate(requests[i], random_ops(rng))
    data = b"".join(requests)
    how = rng.random()
    if how < 0.5 or len(data) < 2:
        pieces = [data]
    else:
        cuts = sorted(set(rng.randrange(1, len(data)) for _ in range(rng.randint(1, 6))))
        pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
    return Case(seed, data, pieces, pause=len(pieces) > 1 and how > 0.9)


def exchange(port: int, c: Case) -> bytes:
    """Send the case on a new connection, shut our side, read to the close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for i, piece in enumerate(c.pieces):
                if i and c.pause:
                    time.sleep(0.002)
                s.sendall(piece)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server refused early and closed: its answer is read below
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                # A reset after the answer is fine (the client wrote on);
                # one that loses the answer shows as a truncated response.
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def model(data: bytes) -> tuple[list[bytes], bool]:
    """The app's answers if every request the reader reads from ``data``
    (then EOF) were served, as a worker serves them: up to the first
    error, or a request after which the connection closes.  Also whether
    the reader read it all without an error."""
    reader = RequestReader()
    reader.feed(data)
    reader.feed(b"")
    answers: list[bytes] = []
    req = None
    size = 0
    while True:
        try:
            event = reader.next_event()
        except HTTPError:
            return answers, False
        if event is PAUSED:
            if not req.keep_alive:
                return answers, True
            reader.start_next()
        elif isinstance(event, Request):
            req, size = event, 0
        elif type(event) is bytes:
            size += len(event)
        elif isinstance(event, EndOfMessage):
            # The WSGI app sees the raw target, the ASGI app the raw path:
            # the same for an origin-form target, the only kind compared.
            path = req.path if req.target.startswith(b"/") else b"*"
            answers.append(b"ok %s %s %d" % (req.method, path, size))
        else:  # ConnectionClosed
            return answers, True


def check_reply(reply: bytes, data: bytes, stats: Counter | None = None) -> str | None:
    """None if ``reply`` is a sequence of complete, well-formed responses
    (parsed by h11 as the client), then the close; else what is wrong.
    ``stats`` counts the statuses seen."""
    conn = h11.Connection(h11.CLIENT)
    conn.receive_data(reply)
    conn.receive_data(b"")
    responses = 0
    served: list[bytes] = []  # the app's answers: "ok METHOD PATH BODY-LENGTH"
    status = 0
    body = bytearray()
    while conn.trailing_data[0]:
        # h11 frames a response by the request it answers; none of the
        # fuzzer's requests is a HEAD or CONNECT, so a GET stands for each.
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        conn.send(h11.EndOfMessage())
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                return f"malformed or truncated response after {responses} complete: {exc}"
            if isinstance(event, (h11.Response, h11.InformationalResponse)):
                if event.status_code not in ALLOWED:
                    return f"status {event.status_code}"
                status = event.status_code
                body = bytearray()
                if stats is not None:
                    stats[status] += 1
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                responses += 1
                if status == 200:
                    served.append(bytes(body))
                break
            elif event is h11.NEED_DATA or isinstance(event, h11.ConnectionClosed):
                return f"truncated response after {responses} complete"
        if conn.their_state is h11.MUST_CLOSE:
            if conn.trailing_data[0]:
                return (f"bytes after a response that closes the connection: "
                        f"{bytes(conn.trailing_data[0][:80])!r}")
            break
        conn.start_next_cycle()
    expected, clean = model(data)
    served = [a if a.split(b" ")[2].startswith(b"/") else
              b" ".join([*a.split(b" ")[:2], b"*", a.split(b" ")[3]]) for a in served]
    if served != expected[:len(served)]:
        return f"the app served {served}; the reader reads {expected}"
    if len(served) < len(expected) and not (not clean and len(served) == len(expected) - 1):
        # One fewer is allowed only where the reader fails later: the app
        # may have caught that error while reading the last body.
        return f"the app served {served}; the reader reads {expected}"
    return None


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False


def _respawned(master: int, dead: int, seen: set[int]) -> int:
    """The worker started after ``dead`` (waiting out any back-off)."""
    pid = wait_for(lambda: [p for p in _workers(master) if p != dead], 60,
                   what="a respawned worker")[0]
    seen.add(pid)
    wait_for(lambda: _alive(pid), 10, what="the new worker")
    return pid


def _workers(master: int) -> list[int]:
    import psutil
    try:
        return sorted(c.pid for c in psutil.Process(master).children()
                      if c.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return []


@pytest.fixture(params=["sync", "asgi"])
def server(request, tmp_path):
    kind = request.param
    port = free_port()
    log = tmp_path / "error.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    env.pop("FORKSERVE_CMD_ARGS", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "forkserve", "-k", kind, "-w", "1", "-b", f"127.0.0.1:{port}",
         "--error-logfile", str(log), "--header-timeout", "5", "--write-timeout", "5",
         "--body-timeout", "5", "--keep-alive", "0.5",
         f"fuzz_target:{'wsgi' if kind == 'sync' else 'asgi'}"],
        cwd=str(APPS), env=env, stdin=subprocess.DEVNULL,
        stdout=open(tmp_path / "stdout.log", "wb"), stderr=subprocess.STDOUT)
    seen: set[int] = set()
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "stdout.log").read_text(errors="replace"))
            return log.exists() and "Ready:" in log.read_text()
        wait_for(ready, 20, what="forkserve to be ready")
        workers = wait_for(lambda: _workers(proc.pid), 10, what="a worker")
        seen.update(workers)
        yield {"kind": kind, "port": port, "log": log, "proc": proc, "seen": seen}
    finally:
        seen.update(_workers(proc.pid))
        stop_tree(proc, seen)


@pytest.mark.timeout(300)
def test_wire_fuzz(server):
    port, proc = server["port"], server["proc"]
    worker = _workers(proc.pid)[0]
    failures: list[str] = []
    deaths: list[str] = []
    stats: Counter = Counter()
    started = time.monotonic()
    for seed in range(FIRST_SEED, FIRST_SEED + COUNT):
        c = case(seed)
        try:
            reply = exchange(port, c)
        except (TimeoutError, socket.timeout):
            failures.append(f"seed {seed}: no close within 10 s; sent {c.data[:200]!r}")
            continue
        problem = check_reply(reply, c.data, stats)
        if problem is not None:
            failures.append(f"seed {seed}: {problem}\n  sent {c.data[:300]!r} in "
                            f"{len(c.pieces)} piece(s)\n  got {reply[:300]!r}")
        if not _alive(worker):
            # A worker may die just after its answer closed the connection,
            # so a death can show only after the next case: replay this
            # case, then the one before, each on a fresh worker, to name
            # the one that kills.
            for suspect in (seed, seed - 1):
                if not _alive(worker):
                    worker = _respawned(proc.pid, worker, server["seen"])
                sc = case(suspect)
                replay = exchange(port, sc)
                time.sleep(0.3)
                if not _alive(worker):
                    deaths.append(f"seed {suspect}: the worker dies; sent {sc.data[:300]!r} "
                                  f"in {len(sc.pieces)} piece(s); got {replay[:200]!r}")
                    break
            else:
                deaths.append(f"seed {seed} or {seed - 1}: the worker died, but neither "
                              "kills it when replayed")
            if len(deaths) >= MAX_DEATHS:
                break
            if not _alive(worker):
                worker = _respawned(proc.pid, worker, server["seen"])
    elapsed = time.monotonic() - started
    log = server["log"].read_text(errors="replace")
    bad_lines = [line for line in log.splitlines()
                 if "Traceback" in line or "[ERROR]" in line or "[CRITICAL]" in line]
    report = []
    if deaths:
        report.append(f"{len(deaths)} worker death(s) (the run stops at {MAX_DEATHS}):")
        report += deaths
    if failures:
        report.append(f"{len(failures)} malformed or missing answer(s), first 10:")
        report += failures[:10]
    if bad_lines:
        report.append(f"{len(bad_lines)} error line(s) in the server log, first 10:")
        report += bad_lines[:10]
    assert not report, (f"{server['kind']} worker, seeds {FIRST_SEED}.., {elapsed:.1f} s:\n"
                        + "\n".join(report) + "\n\nlog tail:\n" + log[-3000:])
    assert proc.poll() is None
    assert _workers(proc.pid) == [worker]
    # The run fuzzed both paths: requests served by the app, and refusals.
    assert stats[200] > COUNT // 5 and stats[400] > COUNT // 5, stats


def test_the_case_generator_is_deterministic_and_varied():
    assert case(7) == case(7)
    cases = [case(s) for s in range(300)]
    assert len({c.data for c in cases}) > 290
    assert sum(len(c.pieces) > 1 for c in cases) > 60
    assert sum(c.pause for c in cases) > 5
    assert sum(c.data.count(b" HTTP/1.1\r\n") > 1 for c in cases) > 60
    # Most are refused by the reader, some are valid: both paths are fuzzed.
    refused = sum(not model(c.data)[1] for c in cases)
    assert 60 < refused < 270, refused

"""The gevent worker (issue 13 item 4): WSGI apps that expect monkey-patched
cooperative I/O, served by real forkserve processes with ``-k gevent``.

The app (tests/apps/gevent_app.py) blocks the way gevent apps do
(``time.sleep``, plain sockets); only the worker's monkey-patching makes
that cooperative, so the concurrency tests fail without it.  A Flask app
runs under forkserve's and gunicorn's gevent workers side by side.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import hostile_scenarios as scenario
from attacks import Slowloris, exchange, get, read_response, status_of
from conftest import APPS, ROOT, Server, parse_response, read_until_close, wait_for
from differential import Conn, differ, encode_request, observe, random_cookies
from servers import differential

pytest.importorskip("gevent")
pytestmark = pytest.mark.e2e

APP = "gevent_app:application"


def _start(forkserve, *args: str, app: str = APP, **kw) -> Server:
    return forkserve(app, "-k", "gevent", "-w", "1", "--graceful-timeout", "5", *args, **kw)


def _addr(server: Server) -> tuple[str, int]:
    return ("127.0.0.1", server.port)


def _get(server: Server, path: str, timeout: float = 15.0) -> tuple[int, bytes]:
    return get(_addr(server), path, timeout=timeout)


def _concurrently(server: Server, paths: list[str], timeout: float = 30.0):
    """GET every path at once, one connection each: ([(status, body)], seconds)."""
    start = time.monotonic()
    with ThreadPoolExecutor(len(paths)) as pool:
        results = list(pool.map(lambda p: _get(server, p, timeout), paths))
    return results, time.monotonic() - start


def _same_workers(server: Server, before: list[int]) -> None:
    time.sleep(0.3)
    assert server.workers() == before, server.log[-3000:]


# -- cooperative I/O -----------------------------------------------------------


def test_fifty_sleeping_requests_run_at_once_in_one_worker(forkserve):
    """50 requests that time.sleep(0.5) finish together, not in 25 s: the
    worker patched time.sleep before importing the app."""
    server = _start(forkserve, "--worker-connections", "100")
    assert _get(server, "/patched") == (200, b"True True")
    results, elapsed = _concurrently(server, ["/sleep"] * 50)
    assert results == [(200, b"slept")] * 50
    assert elapsed < 8, f"50 x 0.5 s took {elapsed:.1f}s: the sleeps did not overlap"


class _SlowPeer:
    """A local server that answers each line after ``delay`` seconds, one
    thread per connection: the app's outbound calls go here."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                conn.recv(100)
                time.sleep(self.delay)
                conn.sendall(b"pong\n")
            except OSError:
                pass

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


def test_outbound_socket_io_is_cooperative(forkserve):
    """Ten requests each waiting 1 s on an outbound socket overlap."""
    peer = _SlowPeer(1.0)
    try:
        server = _start(forkserve)
        results, elapsed = _concurrently(server, [f"/outbound?{peer.port}"] * 10)
    finally:
        peer.close()
    assert results == [(200, b"pong")] * 10
    assert elapsed < 5, f"10 x 1 s outbound calls took {elapsed:.1f}s"


# -- HTTP on the shared connection core ------------------------------------------


def test_keep_alive_pipelining_and_a_chunked_upload(forkserve):
    server = _start(forkserve)
    with server.connect() as s:
        buf = bytearray()
        for _ in range(3):
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(s, buf)[::2] == (200, b"hello from gevent")
        # Three requests in one write: three answers, in order.
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n"
                  b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
                  b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        pid = read_response(s, buf)[2]
        assert read_response(s, buf)[::2] == (200, b"3:abc")
        assert read_response(s, buf)[::2] == (200, b"hello from gevent")
        # A chunked upload on the same connection.
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n")
        assert read_response(s, buf)[::2] == (200, b"11:hello world")
    assert int(pid) in server.workers()
    # A big chunked body, read by the app across many socket reads.
    payload = bytes(range(256)) * 4096
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 70000]), payload[i:i + 70000])
                      for i in range(0, len(payload), 70000))
    raw = server.raw(b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
    assert parse_response(raw)[2] == b"%d:%s" % (len(payload), payload[:64])


def test_hostile_input_gets_4xx_and_a_close_and_no_worker_dies(forkserve):
    server = _start(forkserve, app="hostile_wsgi:application")
    before = server.workers()
    addr = _addr(server)
    for bad in (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked"
                b"\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET /\x00 HTTP/1.1\r\nHost: t\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: t\r\nX: " + b"a" * 70000 + b"\r\n\r\n",
                b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: t\r\n Folded: header\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: t\r\nHost: u\r\n\r\n"):
        raw = exchange(addr, bad, timeout=8)
        status = status_of(raw)
        assert status is not None and 400 <= status < 500, (bad[:60], raw[:200])
        assert raw.count(b"HTTP/1.1 ") == 1, raw  # nothing smuggled after it
    outcomes = scenario.body_errors(server)
    assert all(o["answered"] and o["worker kept"] for o in outcomes.values()), outcomes
    got = scenario.chunk_size_whitespace(server)
    assert got == {name: 400 for name in got}, got
    _same_workers(server, before)


def test_a_slow_head_gets_408_and_slowloris_beyond_the_limit_starves_no_one(forkserve):
    server = _start(forkserve, "--worker-connections", "40", "--header-timeout", "1",
                    app="hostile_wsgi:application")
    before = server.workers()
    with server.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")
        start = time.monotonic()
        raw = read_until_close(s)
    assert status_of(raw) == 408 and 0.7 < time.monotonic() - start < 5, raw
    # More dribbling clients than worker_connections: the ones waiting
    # longest make room, and fresh clients are answered.
    loris = Slowloris(_addr(server), 100, interval=0.5)
    try:
        time.sleep(1.0)
        answers = [_get(server, "/pid", timeout=10)[0] for _ in range(4)]
    finally:
        loris.close()
    assert answers == [200] * 4
    _same_workers(server, before)


def test_a_failing_app_gets_500_with_a_logged_traceback_and_the_worker_serves_on(forkserve):
    server = _start(forkserve, "--access-logfile", "-")
    before = server.workers()
    status, _, _ = server.get("/fail")
    assert status == 500
    server.wait_log("RuntimeError: the app failed on purpose")
    assert "Traceback (most recent call last)" in server.log
    assert _get(server, "/") == (200, b"hello from gevent")
    _same_workers(server, before)
    # The access log has both exchanges (Worker.end_exchange ran).
    wait_for(lambda: '"GET / HTTP/1.1" 200' in server.stdout_path.read_text(), 5,
             what="the access log line")
    assert '"GET /fail HTTP/1.1" 500' in server.stdout_path.read_text()


def test_a_unix_socket_is_served(forkserve):
    server = _start(forkserve, unix=True)
    assert server.get("/")[::2] == (200, b"hello from gevent")


def test_max_requests_recycles_the_worker_without_failing_a_request(forkserve):
    server = _start(forkserve, "--max-requests", "5")
    pids = {_get(server, "/pid") for _ in range(12)}
    assert {status for status, _ in pids} == {200}
    assert len({pid for _, pid in pids}) >= 2, pids
    server.wait_log("Autorestarting worker")


# -- worker_connections --------------------------------------------------------


def test_worker_connections_bounds_concurrency_and_extra_clients_wait(forkserve):
    """With worker_connections 2, four 0.7 s requests: two run at a time,
    the others wait in the listen backlog (none refused, none reset)."""
    server = _start(forkserve, "--worker-connections", "2")
    results, elapsed = _concurrently(server, ["/sleep?0.7"] * 4)
    assert results == [(200, b"slept")] * 4
    assert 1.3 < elapsed < 5, f"{elapsed:.1f}s: not two at a time"
    # Idle keep-alive connections do not hold the worker: at the limit the
    # one waiting longest is closed for a new client.
    idle = [server.connect() for _ in range(2)]
    try:
        for s in idle:
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            read_response(s)
        assert _get(server, "/", timeout=5) == (200, b"hello from gevent")
    finally:
        for s in idle:
            s.close()


# -- liveness: gunicorn's timeout semantics for async workers -------------------


def test_a_long_cooperative_request_keeps_the_worker_but_a_blocked_hub_does_not(forkserve):
    server = _start(forkserve, "--timeout", "1")
    before = server.workers()
    # Waits 2.5 s, well past the timeout, without blocking the hub: the
    # worker beats meanwhile.
    assert _get(server, "/sleep?2.5") == (200, b"slept")
    _same_workers(server, before)
    # Burns the CPU without yielding: no beat, and the arbiter kills it.
    try:
        raw = exchange(_addr(server), b"GET /spin?30 HTTP/1.1\r\nHost: t\r\n\r\n", timeout=20)
    except OSError:
        raw = b""
    assert raw == b""
    server.wait_log("/spin?30", timeout=10)
    after = server.wait_workers(1, timeout=10, exclude=set(before))
    assert after != before
    assert _get(server, "/") == (200, b"hello from gevent")


# -- signals ---------------------------------------------------------------------


def test_hup_under_load_fails_no_request(forkserve):
    server = _start(forkserve, "-w", "2")
    before = set(server.workers())
    stop = threading.Event()
    failures: list[str] = []
    counts = [0]

    def client(path: str) -> None:
        while not stop.is_set():
            try:
                status, _ = _get(server, path, timeout=10)
                if status != 200:
                    failures.append(f"{path}: {status}")
                counts[0] += 1
            except OSError as exc:
                failures.append(f"{path}: {exc!r}")

    threads = [threading.Thread(target=client, args=(p,)) for p in ("/", "/", "/sleep?0.3")]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            time.sleep(0.6)
            server.signal(signal.SIGHUP)
            wait_for(lambda: len(set(server.workers()) - before) >= 2, 15,
                     what="a new generation")
            before = set(server.workers())
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not failures, failures[:5]
    assert counts[0] > 20


def test_term_finishes_the_request_in_flight_and_drains_a_silent_connection(forkserve):
    """TERM: the request in flight is answered; a connection that has sent
    nothing is closed after the drain's first-request grace (2 s), not at
    the end of its 10 s header_timeout or of the graceful_timeout: draining
    wakes the greenlet waiting on it."""
    server = _start(forkserve, "--graceful-timeout", "8")
    answer: list = []
    t = threading.Thread(target=lambda: answer.append(_get(server, "/sleep?1.5")))
    t.start()
    with server.connect() as silent:
        time.sleep(0.5)
        start = time.monotonic()
        server.signal(signal.SIGTERM)
        assert read_until_close(silent) == b""
        closed = time.monotonic() - start
        t.join(15)
        assert answer == [(200, b"slept")]
        assert server.wait_exit(10) == 0
    assert 1.0 < closed < 5, f"closed {closed:.1f}s after TERM"
    with pytest.raises(OSError):
        _get(server, "/", timeout=2)


def test_quit_stops_at_once_even_with_a_request_in_flight(forkserve):
    server = _start(forkserve)
    t = threading.Thread(target=lambda: exchange(_addr(server),
                                                 b"GET /sleep?20 HTTP/1.1\r\nHost: t\r\n\r\n",
                                                 timeout=25), daemon=True)
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    server.signal(signal.SIGQUIT)
    server.wait_exit(10)
    assert time.monotonic() - start < 5
    t.join(5)


# -- setup ---------------------------------------------------------------------


def test_without_gevent_it_is_a_one_line_error_with_the_install_command(tmp_path):
    # gevent made unimportable for this one process: None in sys.modules is
    # what importlib reports as "not installed".
    code = ("import sys; sys.modules['gevent'] = None; sys.argv[0] = 'forkserve'; "
            "from forkserve.cli import main; main()")
    for name in ("gevent", "gunicorn.workers.ggevent.GeventWorker"):
        done = subprocess.run([sys.executable, "-c", code, "-k", name, "-b", "127.0.0.1:9",
                               APP], cwd=APPS, capture_output=True, text=True, timeout=30,
                              env={"PYTHONPATH": f"{ROOT}:{APPS}", "PATH": "/usr/bin:/bin"})
        assert done.returncode == 2, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'forkserve[gevent]'" in lines[0], done.stderr


def test_preload_app_is_served_and_the_unpatched_import_is_named(forkserve):
    server = _start(forkserve, "--preload")
    server.wait_log("preload_app with -k gevent")
    # The app module's `time` is the module object gevent patched in place.
    assert _get(server, "/patched") == (200, b"True True")


def test_preload_with_an_app_that_patches_itself_serves_cooperatively_and_reloads(
        forkserve, tmp_path):
    """gunicorn's advice for preload_app, followed: the app patches first
    thing (so the master is patched too).  Its requests overlap, and a HUP
    imports the new code without importing gevent a second time (which
    fails once the standard library is patched)."""
    source = (APPS / "gevent_preload_app.py").read_text()
    module = tmp_path / "gevent_preload_copy.py"
    module.write_text(source)
    server = _start(forkserve, "--preload", app="gevent_preload_copy:application",
                    cwd=tmp_path)
    results, elapsed = _concurrently(server, ["/sleep"] * 6)
    assert {body.split()[0] for _, body in results} == {b"v1"}
    assert elapsed < 2.5, f"6 x 0.5 s took {elapsed:.1f}s"
    module.write_text(source.replace('VERSION = b"v1"', 'VERSION = b"v2"'))
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete", timeout=15)
    assert _get(server, "/")[1].split()[0] == b"v2"
    assert "Reload failed" not in server.log
    assert "preload_app with -k gevent" not in server.log


# -- a real Flask app, under forkserve's and gunicorn's gevent workers ---------------


@pytest.fixture(scope="module")
def flask_pair(tmp_path_factory):
    pytest.importorskip("flask")
    tmp = tmp_path_factory.mktemp("flask-gevent")
    state = tmp / "state"
    state.mkdir()
    (state / "payload.bin").write_bytes(bytes(range(256)) * 2000)
    gevent = ("-k", "gevent", "--worker-connections", "100")
    with differential(tmp, "flaskapp:app", "wsgi", env={"FS_FRAMEWORKS_STATE": str(state)},
                      ready_path="/ping", forkserve_args=gevent,
                      reference_args=gevent) as pair:
        yield pair


def test_flask_answers_the_same_under_both_gevent_workers(flask_pair):
    assert "(gevent)" in flask_pair.forkserve.log
    body = bytes(range(256)) * 300
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 9000]), body[i:i + 9000])
                       for i in range(0, len(body), 9000)) + b"0\r\n\r\n"

    def scenario(host, port):
        seen = []
        with Conn(host, port) as c:
            seen.append(observe(c.request("GET", "/ping")))
            seen.append(observe(c.request("GET", "/file")))
            seen.append(observe(c.request("GET", "/stream?n=500")))
            seen.append(observe(c.request(
                "POST", "/upload", [("Content-Type", "application/octet-stream"),
                                    ("Transfer-Encoding", "chunked")], chunked)))
            seen.append(observe(c.request("POST", "/login", [
                ("Content-Type", "application/x-www-form-urlencoded")], b"user=alice"),
                body=False, normalize=[random_cookies("session")]))
        with Conn(host, port) as c:
            c.send(encode_request("GET", "/environ?x=1", [("X-Dup", "a")]))
            seen.append(observe(c.response(), json.loads))
        return seen
    differ(flask_pair, "direct", scenario)

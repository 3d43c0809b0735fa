"""The sync worker on the connection core: what a client or an app can do to
a worker (issue 12 items 1, 3, 4, 6, 11) and the drain policy (issue 11
item 4), against real forkserve processes over loopback."""

from __future__ import annotations

import signal
import socket
import threading
import time

import pytest

from conftest import parse_response, read_until_close, wait_for

pytestmark = pytest.mark.e2e

APP = "wsgi_core:application"


def _pid(server) -> int:
    status, _, body = server.get("/pid")
    assert status == 200
    return int(body)


def _recv_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict, bytes]:
    """One Content-Length response off a keep-alive connection."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a response; got {bytes(buf)!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    status, headers, _ = parse_response(head + b"\r\n\r\n")
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside a body")
        rest += data
    buf[:] = rest[n:]
    return status, headers, rest[:n]


# -- issue 12 item 1: an app that catches body errors ------------------------

BAD_BODIES = {
    "negative chunk size": b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "missing chunk CRLF": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    "forbidden trailer": b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"
                         b"Content-Length: 5\r\n\r\n",
}


@pytest.mark.parametrize("threads", ["1", "4"])
@pytest.mark.parametrize("name", sorted(BAD_BODIES))
def test_app_catching_a_body_error_does_not_kill_the_worker(forkserve, name, threads):
    server = forkserve(APP, "-w", "1", "--threads", threads)
    pids = server.workers()
    raw = server.raw(b"POST /catch HTTP/1.1\r\nHost: x\r\n" + BAD_BODIES[name]
                     + b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n", timeout=10)
    status, headers, body = parse_response(raw)
    # The app's own answer goes out, and the connection closes after it:
    # nothing after a malformed body is read as a request.
    assert (status, body) == (400, b"caught: HTTPError"), raw
    assert headers.get("connection") == "close"
    assert raw.count(b"HTTP/1.1 ") == 1
    assert server.workers() == pids
    assert _pid(server) == pids[0]
    assert "Traceback" not in server.log


def test_body_shorter_than_its_content_length(forkserve):
    server = forkserve(APP, "-w", "1")
    pids = server.workers()
    with server.connect(10) as s:
        s.sendall(b"POST /catch HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        s.shutdown(socket.SHUT_WR)
        raw = read_until_close(s)
    status, headers, body = parse_response(raw)
    assert (status, body) == (400, b"caught: HTTPError"), raw
    assert headers.get("connection") == "close"
    assert server.workers() == pids
    assert _pid(server) == pids[0]


@pytest.mark.parametrize("threads", ["1", "4"])
def test_expect_continue_body_never_asked_for_is_announced_as_a_close(forkserve, threads):
    """An app that answers without reading an ``Expect: 100-continue`` body:
    no 100 went out, so the client may send the body or not (RFC 9110
    10.1.1); the connection cannot be reused, and the head must say so
    before the client sends its next request on it (found by the Flask
    differential test: a POST /logout, then a GET lost to a reset)."""
    server = forkserve(APP, "-w", "1", "--threads", threads)
    with server.connect(10) as s:
        s.sendall(b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        buf = bytearray()
        status, headers, body = _recv_response(s, buf)
        assert (status, body) == (200, b"ignored")
        assert headers.get("connection") == "close"
        assert bytes(buf) == b""  # no "100 Continue" before it
        s.settimeout(5)
        assert read_until_close(s) == b""
    # Asked for, the body is read and the connection stays usable.
    with server.connect(10) as s:
        s.sendall(b"POST /catch HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        s.settimeout(5)
        assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(b"0123456789GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        buf = bytearray()
        status, headers, body = _recv_response(s, buf)
        assert (status, body) == (200, b"read 10")
        assert "connection" not in headers
        assert _recv_response(s, buf)[0] == 200


# -- issue 12 item 3: a worker making progress always beats ------------------

def test_pipelined_requests_longer_than_timeout_in_total(forkserve):
    server = forkserve(APP, "-w", "1", "--timeout", "3")
    pids = server.workers()
    n = 6
    with server.connect(30) as s:
        s.sendall(b"GET /sleep?1 HTTP/1.1\r\nHost: x\r\n\r\n" * n)
        buf = bytearray()
        answers = [_recv_response(s, buf) for _ in range(n)]
    assert [(st, b) for st, _, b in answers] == [(200, b"slept")] * n
    assert server.workers() == pids
    assert "WORKER TIMEOUT" not in server.log


def test_looping_clients_busier_than_timeout(forkserve):
    server = forkserve(APP, "-w", "1", "--timeout", "3")
    pids = server.workers()
    failures: list[str] = []
    done = [0]
    stop = time.monotonic() + 8

    def client():
        try:
            with server.connect(30) as s:
                buf = bytearray()
                while time.monotonic() < stop:
                    s.sendall(b"GET /sleep?1 HTTP/1.1\r\nHost: x\r\n\r\n")
                    status, _, _ = _recv_response(s, buf)
                    if status != 200:
                        failures.append(str(status))
                    done[0] += 1
        except OSError as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=client) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    assert done[0] >= 6
    assert server.workers() == pids
    assert "WORKER TIMEOUT" not in server.log


# -- issue 12 item 6: after TERM, no more accepts -----------------------------

def test_term_stops_accepting_at_once(forkserve):
    server = forkserve(APP, "-w", "1")
    inflight = server.connect(10)
    inflight.sendall(b"GET /sleep?2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    time.sleep(0.3)
    queued = []
    for _ in range(3):
        s = server.connect(10)
        s.sendall(b"GET /sleep?5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        queued.append(s)
    time.sleep(0.3)
    start = time.monotonic()
    server.signal(signal.SIGTERM)
    raw = read_until_close(inflight)
    server.wait_exit(20)
    took = time.monotonic() - start
    inflight.close()
    for s in queued:
        s.close()
    # The in-flight request finishes (about 1.4 s left); the queued ones are
    # not taken (each would add 5 s).
    assert parse_response(raw)[:1] == (200,)
    assert took < 5, took


# -- issue 11 item 7: header values and the access log ------------------------

def test_leading_and_trailing_whitespace_is_not_part_of_a_value(forkserve):
    server = forkserve(APP, "-w", "1")
    raw = server.raw(b"GET /cookie HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"\r\nSet-Cookie: sessionid=abc; Path=/\r\n" in raw, raw
    assert b"\r\nX-Pad: v\r\n" in raw, raw


# -- issue 12 item 4: draining an unread body is bounded -----------------------

class Trickler(threading.Thread):
    """Sends ``head``, then one byte of ``body`` every ``every`` seconds,
    collecting whatever the server answers, until stopped."""

    def __init__(self, server, head: bytes, body: bytes, every: float) -> None:
        super().__init__(daemon=True)
        self.sock = server.connect(60)
        self.head, self.body, self.every = head, body, every
        self.received = bytearray()
        self.stopping = threading.Event()

    def run(self) -> None:
        self.sock.sendall(self.head)
        self.sock.settimeout(self.every)
        for i in range(len(self.body)):
            try:
                self.sock.send(self.body[i:i + 1])
            except OSError:
                break
            try:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.received += data
            except socket.timeout:
                pass
            except OSError:
                break
            if self.stopping.is_set():
                break

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.sock.close()


@pytest.mark.parametrize("framing", ["huge content-length", "chunked"])
def test_an_ignored_trickled_body_does_not_tie_up_the_worker(forkserve, framing):
    server = forkserve(APP, "-w", "1")
    pids = server.workers()
    if framing == "chunked":
        head = b"POST /ignore HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        body = b"1\r\na\r\n" * 1000
    else:
        head = b"POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 10737418240\r\n\r\n"
        body = b"a" * 1000
    trickler = Trickler(server, head, body, every=0.5)
    trickler.start()
    try:
        time.sleep(1.0)
        # Other clients are answered, promptly, while the trickle goes on.
        for _ in range(4):
            t0 = time.monotonic()
            status, _, body_ = server.get("/pid", timeout=5)
            assert (status, int(body_)) == (200, pids[0])
            assert time.monotonic() - t0 < 2.5
        # The trickler got its answer, and the connection closed after it.
        wait_for(lambda: b"\r\n\r\nignored" in trickler.received, 5, what="the answer")
        wait_for(lambda: not trickler.is_alive(), 5, what="the connection to close")
    finally:
        trickler.stop()
    assert server.workers() == pids


def test_an_app_reading_a_trickled_body_does_not_keep_the_worker_alive(forkserve):
    # The rule: client I/O counts as progress only at 1 KiB/s or more once
    # the exchange is older than `timeout`; a byte every 0.5 s is not.
    server = forkserve(APP, "-w", "1", "--timeout", "2")
    pids = server.workers()
    trickler = Trickler(server, b"POST /catch HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
                        b"a" * 1000, every=0.5)
    trickler.start()
    try:
        server.wait_log("WORKER TIMEOUT", timeout=20)
        new = server.wait_workers(1, exclude=set(pids), timeout=15)
        assert _pid(server) == new[0]
    finally:
        trickler.stop()


def test_a_slow_but_steady_upload_is_progress(forkserve):
    # 64 KB/s for 5 s with --timeout 2: well above the rate, never killed.
    server = forkserve(APP, "-w", "1", "--timeout", "2")
    pids = server.workers()
    piece = 6400
    size = piece * 50
    with server.connect(30) as s:
        s.sendall(b"POST /catch HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Length: %d\r\n\r\n" % size)
        for _ in range(50):
            s.sendall(b"b" * piece)
            time.sleep(0.1)
        status, _, body = parse_response(read_until_close(s))
    assert (status, body) == (200, b"read %d" % size)
    assert server.workers() == pids


# -- issue 11 item 4 (sync): the drain keeps idle keep-alive connections -------

@pytest.mark.parametrize("threads", ["1", "4"])
def test_idle_keepalive_connection_is_answered_after_hup(forkserve, threads):
    server = forkserve(APP, "-w", "1", "--keep-alive", "10", "--threads", threads)
    with server.connect(20) as s:
        buf = bytearray()
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _recv_response(s, buf)
        old = int(body)
        assert status == 200 and "connection" not in headers
        before = server.log.count("Reload complete")
        server.signal(signal.SIGHUP)
        # The old worker is told to drain once the new one is ready.
        server.wait_log("Reload complete", count=before + 1, timeout=20)
        time.sleep(0.3)
        # A proxy may send on its idle upstream connection at any moment:
        # the draining worker answers, and closes only after that.
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = _recv_response(s, buf)
        assert (status, int(body)) == (200, old)
        assert headers.get("connection") == "close"
        assert s.recv(1) == b""
    wait_for(lambda: old not in server.workers(), 10, what="the old worker to exit")


def test_idle_keepalive_connection_closes_at_its_keepalive_timeout_when_draining(forkserve):
    server = forkserve(APP, "-w", "1", "--keep-alive", "4")
    with server.connect(20) as s:
        buf = bytearray()
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        _, _, body = _recv_response(s, buf)
        t0 = time.monotonic()
        old = int(body)
        server.signal(signal.SIGHUP)
        # Nothing is sent: the old worker closes the connection at the end
        # of its keep-alive timeout (4 s from the response), not when it
        # starts draining, then exits.
        assert s.recv(1) == b""
        assert 3 <= time.monotonic() - t0 < 8
    wait_for(lambda: old not in server.workers(), 10, what="the old worker to exit")


# -- issue 12 item 11 (sync): slow clients beyond worker_connections -----------

def test_slowloris_beyond_worker_connections_does_not_starve_others(forkserve):
    server = forkserve(APP, "-w", "1", "--worker-connections", "50")
    pids = server.workers()
    slow = []
    try:
        for _ in range(100):
            s = server.connect(10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-a: ")
            slow.append(s)
        time.sleep(0.5)
        answered = 0
        for _ in range(4):
            try:
                status, _, _ = server.get("/pid", timeout=3)
                answered += status == 200
            except OSError:
                pass
        assert answered == 4
        # The slow heads that made room were told why.
        told = 0
        for s in slow:
            s.settimeout(0.01)
            try:
                told += s.recv(100).startswith(b"HTTP/1.1 408 ")
            except OSError:
                pass
        assert told >= 4
    finally:
        for s in slow:
            s.close()
    assert server.workers() == pids


# -- issue 11 item 7: the access log counts what was sent ----------------------

def _access_lines(path, n, timeout=10):
    wait_for(lambda: path.exists() and len(path.read_text().splitlines()) >= n, timeout,
             what=f"{n} access log lines")
    return path.read_text().splitlines()


@pytest.mark.parametrize("route", ["/download-one", "/download-file", "/download"])
def test_access_log_counts_the_bytes_of_an_aborted_download(forkserve, tmp_path, route):
    log = tmp_path / "access.log"
    server = forkserve(APP, "-w", "1", "--access-logfile", str(log),
                       "--access-logformat", "%(r)s %(s)s %(B)s")
    size = 256 << 20
    with server.connect(10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET %s?%d HTTP/1.1\r\nHost: x\r\n\r\n" % (route.encode(), size))
        got = 0
        while got < 1 << 20:
            got += len(s.recv(65536))
        # Abort: a reset, as a browser closing the tab.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    line = _access_lines(log, 1)[0]
    logged = int(line.rsplit(" ", 1)[1])
    assert line.startswith(f"GET {route}?{size} HTTP/1.1 200 ")
    assert got - 65536 <= logged < size // 4, line
    assert _pid(server)


def test_access_log_sizes_print_as_gunicorn_does(forkserve, tmp_path):
    """%(b)s and %(B)s for empty and non-empty bodies, against gunicorn."""
    import shutil
    import subprocess

    from conftest import APPS, free_port, stop_tree
    fmt = "%(m)s %(U)s %(s)s b=%(b)s B=%(B)s"
    requests = [("GET", "/empty"), ("HEAD", "/ignore"), ("GET", "/ignore"), ("GET", "/cookie")]
    log = tmp_path / "fs-access.log"
    server = forkserve(APP, "-w", "1", "--access-logfile", str(log), "--access-logformat", fmt)
    for method, path in requests:
        server.request(method, path)
    ours = _access_lines(log, len(requests))
    gunicorn = "/tmp/peers/bin/gunicorn"
    if not shutil.which(gunicorn):
        pytest.skip("gunicorn (reference server) is not installed at /tmp/peers")
    glog = tmp_path / "gunicorn-access.log"
    port = free_port()
    proc = subprocess.Popen([gunicorn, "-b", f"127.0.0.1:{port}", "-w", "1", "--access-logfile",
                             str(glog), "--access-logformat", fmt, APP], cwd=str(APPS),
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(APPS)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _connects(port), 20, what="gunicorn to listen")
        server.port = port
        for method, path in requests:
            server.request(method, path)
        theirs = _access_lines(glog, len(requests))
    finally:
        stop_tree(proc)
    assert ours == theirs
    assert ours[0] == "GET /empty 204 b=0 B=0"


def _connects(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


# -- issue 11 "done when": 20 HUPs behind nginx, mixed keep-alive load ---------

NGINX_SITE = """
upstream forkserve {
    server unix:%(sock)s fail_timeout=0;
    keepalive 16;
    # Below forkserve's keepalive (3 s): nginx closes an idle upstream
    # connection before forkserve would, so it never sends on one that
    # forkserve is closing.
    keepalive_timeout 1s;
}
server {
    listen 127.0.0.1:%(port)d;
    location / {
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_pass http://forkserve;
    }
}
"""


@pytest.fixture
def nginx_keepalive(tmp_path):
    import shutil
    import subprocess

    from conftest import free_port
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which(binary):
        pytest.skip("nginx is not installed")
    port = free_port()
    sock = tmp_path / "fs.sock"
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / d).mkdir()
    (tmp_path / "nginx.conf").write_text(f"""
user root;
worker_processes 1;
pid {tmp_path}/nginx.pid;
error_log {tmp_path}/nginx-error.log;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    {NGINX_SITE % {"sock": sock, "port": port}}
}}
""")
    proc = subprocess.Popen([binary, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield {"port": port, "sock": str(sock), "log": tmp_path / "nginx-error.log"}
    finally:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_twenty_hups_behind_nginx_lose_nothing(forkserve, nginx_keepalive):
    twenty_hups_behind_nginx(forkserve, nginx_keepalive, APP)


def twenty_hups_behind_nginx(forkserve, nginx, app: str) -> None:
    """20 HUPs while 8 keep-alive clients send GETs and POSTs through
    nginx: every request must get its 200 (issue 11)."""
    server = forkserve(app, "-b", f"unix:{nginx['sock']}", "-w", "2", "--keep-alive", "3",
                       bind=False)
    port = nginx["port"]

    def connect(timeout=10):
        return socket.create_connection(("127.0.0.1", port), timeout=timeout)

    def up():
        try:
            with connect() as s:
                s.sendall(b"GET /ignore HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                return parse_response(read_until_close(s))[0] == 200
        except OSError:
            return False
    wait_for(up, 10, what="nginx to reach forkserve")

    stop = threading.Event()
    counts = {"ok": 0}
    bad: list[str] = []
    lock = threading.Lock()

    def client(method: bytes, body: bytes):
        request = (b"%s /catch HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n"
                   % (method, len(body)) + body)
        expect = b"read %d" % len(body)
        sock, buf = None, bytearray()
        while not stop.is_set():
            try:
                if sock is None:
                    sock, buf = connect(), bytearray()
                sock.sendall(request)
                status, headers, got = _recv_response(sock, buf)
            except OSError as exc:
                # nginx keeps its client connections open: any failure here
                # is a lost request.
                with lock:
                    bad.append(repr(exc))
                if sock is not None:
                    sock.close()
                sock = None
                continue
            with lock:
                if status == 200 and got == expect:
                    counts["ok"] += 1
                else:
                    bad.append(f"{status} {got[:60]!r}")
            if headers.get("connection") == "close":
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=client, args=args) for args in
               [(b"POST", b"p" * 3000)] * 4 + [(b"GET", b"")] * 2 + [(b"POST", b"")] * 2]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            before = server.log.count("Reload complete")
            server.signal(signal.SIGHUP)
            server.wait_log("Reload complete", count=before + 1, timeout=20)
            time.sleep(0.2)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(f"\n[nginx] 20 HUPs: {counts['ok']} ok, {len(bad)} failed")
    if bad:
        # What nginx saw from the upstream side says which end lost it.
        errors = [line for line in nginx["log"].read_text().splitlines()
                  if "[error]" in line or "[crit]" in line or "[alert]" in line]
        assert not bad, (bad[:10], errors[-10:],
                         [line for line in server.log.splitlines()
                          if "ERROR" in line or "CRITICAL" in line or "WARNING" in line][-20:])
    assert counts["ok"] > 200


# -- the end of an exchange: hooks ---------------------------------------------

def test_request_hooks_see_gunicorn_names_and_cannot_kill_the_worker(forkserve, tmp_path):
    hook_log = tmp_path / "hooks.log"
    server = forkserve(APP, "-w", "1", "-c", "hooks_core_conf.py",
                       env={"FS_HOOK_LOG": str(hook_log)})
    pids = server.workers()
    assert server.get("/ignore?x=1")[:1] == (200,)
    status, headers, _ = server.get("/pre-fails")
    assert status == 500
    assert server.get("/post-fails")[0] == 404
    assert server.get("/ignore")[0] == 200
    wait_for(lambda: hook_log.exists() and len(hook_log.read_text().splitlines()) >= 4, 5,
             what="post_request lines")
    lines = hook_log.read_text().splitlines()
    assert lines[0] == "GET /ignore x=1 (1, 1) '200 OK' 200 7 /ignore"
    # As in gunicorn, post_request runs after a failed pre_request too.
    assert lines[1] == "GET /pre-fails  (1, 1) '500 Internal Server Error' 500 0 /pre-fails"
    assert lines[2] == "GET /post-fails  (1, 1) '404 Not Found' 404 9 /post-fails"
    assert "pre_request hook failed" in server.log and "post_request hook failed" in server.log
    assert server.workers() == pids


# -- an unread body the Content-Length says is too large to drop ---------------

@pytest.mark.parametrize("app", ["wsgi_basic:application", "asgi_basic:app"])
def test_a_body_too_large_to_discard_closes_at_once(forkserve, app):
    """The app answered without reading a body whose Content-Length leaves
    more than the discard bound (1 MiB): the connection closes right after
    the response instead of reading and dropping a useless megabyte first."""
    server = forkserve(app, "-w", "1")
    pids = server.workers()
    with server.connect(10) as s:
        s.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10485760\r\n\r\n"
                  + b"a" * 65536)
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            assert chunk, buf
            buf += chunk
        answered = time.monotonic()
        head = bytes(buf).split(b"\r\n\r\n")[0]
        assert head.startswith(b"HTTP/1.1 200 "), head
        # Nothing more is sent; the server shuts its side.
        while s.recv(65536):
            pass
        closed_after = time.monotonic() - answered
    # Reading and dropping would wait up to drain_time (1 s) for bytes that
    # never come.
    assert closed_after < 0.6, closed_after
    assert server.workers() == pids

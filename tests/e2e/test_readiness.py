"""/livez and /readyz from the master, drain_delay on TERM, and a HAProxy
that routes away from a draining forkserve with no failed request."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
from conftest import free_port, stop_tree, wait_for  # noqa: E402
from loadgen import Load  # noqa: E402
from scrape import control_get  # noqa: E402

pytestmark = pytest.mark.e2e

HAPROXY = "/usr/sbin/haproxy"


def _start(forkserve, *args: str, app: str = "wsgi_basic:application"):
    port = free_port()
    server = forkserve(app, "--metrics-bind", f"127.0.0.1:{port}", *args)
    server.metrics_port = port
    return server


def _ready(port: int) -> int:
    return control_get(port, "/readyz", timeout=2)[0]


@pytest.mark.parametrize("app", ["wsgi_basic:application", "asgi_basic:app"])
def test_readyz_turns_503_at_once_on_term_and_serving_goes_on_for_drain_delay(forkserve, app):
    server = _start(forkserve, "-w", "2", "--drain-delay", "2", app=app)
    port = server.metrics_port
    assert _ready(port) == 200
    assert control_get(port, "/livez")[0] == 200
    sent_at = time.monotonic()
    server.signal(signal.SIGTERM)
    while _ready(port) != 503:
        assert time.monotonic() - sent_at < 2
    flipped = time.monotonic() - sent_at
    assert flipped < 0.1, f"/readyz took {flipped:.3f}s to turn 503"
    status, _, body = control_get(port, "/readyz")
    assert body == b"not ready: draining\n"
    # Serving goes on normally (keep-alive too) during the delay.
    with server.connect() as s:
        for _ in range(5):
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = s.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in data
    while time.monotonic() - sent_at < 1.5:
        assert server.get("/")[0] == 200
        assert control_get(port, "/livez")[0] == 200
        time.sleep(0.05)
    assert server.proc.poll() is None
    assert server.wait_exit(10) == 0
    assert 2.0 <= time.monotonic() - sent_at
    server.wait_log("Draining: /readyz answers 503")


def test_a_second_term_ends_the_delay(forkserve):
    server = _start(forkserve, "--drain-delay", "30")
    server.signal(signal.SIGTERM)
    wait_for(lambda: _ready(server.metrics_port) == 503, 2)
    t = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - t < 8


def test_readyz_stays_200_during_hups(forkserve):
    server = _start(forkserve, "-w", "2")
    port = server.metrics_port
    seen = []
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            seen.append(_ready(port))
            time.sleep(0.01)

    t = threading.Thread(target=poll)
    t.start()
    try:
        for i in range(3):
            server.signal(signal.SIGHUP)
            server.wait_log("Reload complete", count=i + 1, timeout=20)
            time.sleep(0.2)
    finally:
        stop.set()
        t.join(5)
    assert len(seen) >= 10 and set(seen) == {200}, seen


def test_readyz_503_while_no_worker_serves(forkserve):
    server = _start(forkserve, "-w", "1")
    port = server.metrics_port
    assert _ready(port) == 200
    server.signal(signal.SIGWINCH)  # every worker stops; the master stays
    wait_for(lambda: _ready(port) == 503, 10)
    assert control_get(port, "/readyz")[2] == b"not ready: no worker is serving\n"
    assert control_get(port, "/livez")[0] == 200


@pytest.mark.skipif(not os.path.exists(HAPROXY), reason="haproxy not installed")
def test_haproxy_routes_away_from_a_draining_server_without_a_failure(forkserve, tmp_path):
    """Two forkserve backends behind HAProxy, health-checked on /readyz of
    their control listeners; TERM one of them with drain_delay: HAProxy
    stops sending to it before it stops accepting, so no request fails."""
    a = _start(forkserve, "-w", "2", "--drain-delay", "3", "--graceful-timeout", "5")
    b = _start(forkserve, "-w", "2")
    front = free_port()
    stats = free_port()
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
global
    maxconn 500
defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    # A check slower than this counts as failed: generous, the machine may
    # be loaded, and a healthy backend marked down would fail requests.
    timeout check 2s
    retries 0
frontend fe
    bind 127.0.0.1:{front}
    default_backend be
frontend stats
    bind 127.0.0.1:{stats}
    http-request return status 200 content-type text/plain string ok
backend be
    balance roundrobin
    option httpchk GET /readyz
    default-server inter 200ms fall 2 rise 1
    server a 127.0.0.1:{a.port} check port {a.metrics_port}
    server b 127.0.0.1:{b.port} check port {b.metrics_port}
""")
    check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, timeout=20)
    assert check.returncode == 0, check.stdout + check.stderr
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        def via_haproxy(timeout: float = 10.0):
            return socket.create_connection(("127.0.0.1", front), timeout=timeout)

        def both_serve():
            try:
                return _both_serve()
            except OSError:  # haproxy not listening yet
                return False

        def _both_serve():
            pids = set()
            for _ in range(10):
                with via_haproxy() as s:
                    s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    data = b""
                    while chunk := s.recv(65536):
                        data += chunk
                if not data.startswith(b"HTTP/1.1 200"):
                    return False
                pids.add(int(data.rpartition(b"\r\n\r\n")[2]))
            return len(pids & set(a.workers())) and len(pids & set(b.workers()))

        wait_for(both_serve, 10, what="haproxy to send to both backends")
        with Load(via_haproxy, "/", keepalive=2, fresh=2) as load:
            time.sleep(0.5)
            a.signal(signal.SIGTERM)
            assert a.wait_exit(15) == 0
            time.sleep(0.5)
        result = load.result
        assert result.failed == 0, result
        assert result.ok > 50, result
    finally:
        stop_tree(proc)

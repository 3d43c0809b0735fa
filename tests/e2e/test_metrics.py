"""/metrics served by the master: real scrapes, checked by promtool, counters
exact on a quiet server and monotonic across every way a worker ends."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
from conftest import free_port, wait_for  # noqa: E402
from loadgen import Load  # noqa: E402
from scrape import control_get, parse, scrape, total  # noqa: E402

pytestmark = pytest.mark.e2e

PROMTOOL = "/usr/bin/promtool"
APPS = {"sync": "wsgi_basic:application", "asgi": "asgi_basic:app"}


def _start(forkserve, kind: str, *args: str):
    port = free_port()
    server = forkserve(APPS[kind], "--metrics-bind", f"127.0.0.1:{port}", *args)
    server.metrics_port = port
    return server


def _requests(samples) -> float:
    return total(samples, "forkserve_requests_total")


@pytest.mark.skipif(not os.path.exists(PROMTOOL), reason="promtool not installed")
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_promtool_accepts_a_scrape_under_load(forkserve, kind):
    server = _start(forkserve, kind, "-w", "2")
    with Load(server.connect, "/", keepalive=2, fresh=2) as load:
        time.sleep(0.5)
        status, headers, body = control_get(server.metrics_port, "/metrics")
        time.sleep(0.2)
    assert load.result.failed == 0, load.result
    assert status == 200
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    check = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True,
                           timeout=30)
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), (
        check.stdout + check.stderr).decode()
    samples = parse(body.decode())
    assert total(samples, "forkserve_requests_total", kind=kind, status_class="2xx") > 0
    assert total(samples, "forkserve_workers", state="ready") == 2
    assert total(samples, "forkserve_workers_resident_memory_bytes") > 1_000_000
    assert total(samples, "forkserve_listen_queue_limit") == 2048
    assert total(samples, "forkserve_build_info") == 1
    assert total(samples, "process_start_time_seconds") > time.time() - 120

    # OpenMetrics when asked for, with its own framing.
    status, headers, body = control_get(server.metrics_port, "/metrics",
                                        {"Accept": "application/openmetrics-text"})
    assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert "# TYPE forkserve_requests counter\n" in text
    assert "# UNIT forkserve_request_duration_seconds seconds\n" in text


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_counters_equal_requests_on_a_quiet_server(forkserve, kind):
    server = _start(forkserve, kind, "-w", "2")
    for _ in range(20):
        assert server.get("/")[0] == 200
    for _ in range(7):
        assert server.get("/error")[0] == 500
    for _ in range(5):
        assert server.get("/no-such-route")[0] == 404
    for _ in range(4):
        assert server.request("POST", "/echo", body=b"x" * 1000)[0] == 200
    port = server.metrics_port

    def settled():
        s = scrape(port)
        return s if _requests(s) == 36 else None

    s = wait_for(settled, 5, what="36 requests counted")
    time.sleep(0.3)
    s = scrape(port)
    assert _requests(s) == 36
    assert total(s, "forkserve_requests_total", kind=kind, status_class="2xx") == 24
    assert total(s, "forkserve_requests_total", kind=kind, status_class="5xx") == 7
    assert total(s, "forkserve_requests_total", kind=kind, status_class="4xx") == 5
    assert total(s, "forkserve_request_duration_seconds_count", kind=kind) == 36
    assert total(s, "forkserve_request_duration_seconds_bucket", kind=kind, le="+Inf") == 36
    assert total(s, "forkserve_received_bytes_total", kind=kind) == 4000
    assert total(s, "forkserve_sent_bytes_total", kind=kind) >= 20 * 5 + 4000
    assert total(s, "forkserve_requests_in_progress") == 0
    assert 0 < total(s, "forkserve_request_duration_seconds_sum") < 36 * 5


def _counters(samples) -> dict:
    return {k: v for k, v in samples.items()
            if k[0].endswith(("_total", "_bucket", "_count", "_sum"))}


def test_counters_never_go_backwards_across_worker_exits(forkserve):
    """kill -9, TTOU, max_requests recycling and 5 HUPs: every counter only
    grows, and the request count stays exactly what was sent."""
    server = _start(forkserve, "sync", "-w", "3", "--max-requests", "12",
                    "--graceful-timeout", "5")
    port = server.metrics_port
    sent = 0
    last: dict = {}

    def batch(n: int) -> None:
        nonlocal sent, last
        for _ in range(n):
            assert server.get("/")[0] == 200
        sent += n
        s = wait_for(lambda: (lambda s: s if _requests(s) == sent else None)(scrape(port)),
                     10, what=f"{sent} requests counted")
        now = _counters(s)
        for key, value in last.items():
            assert now.get(key, 0) >= value, (key, value, now.get(key))
        last = now

    batch(10)
    victim = server.workers()[0]
    os.kill(victim, signal.SIGKILL)
    server.wait_workers(3, exclude={victim})
    batch(10)
    server.signal(signal.SIGTTOU)
    server.wait_workers(2)
    batch(30)  # past max_requests=12 for at least one of two workers
    server.wait_log("Autorestarting worker")
    for i in range(5):
        server.signal(signal.SIGHUP)
        server.wait_log("Reload complete", count=i + 1, timeout=20)
        batch(5)
    s = scrape(port)
    assert _requests(s) == sent == 75
    assert total(s, "forkserve_worker_exits_total", reason="crash") == 1
    assert total(s, "forkserve_worker_exits_total", reason="scale_down") == 1
    assert total(s, "forkserve_worker_exits_total", reason="max_requests") >= 1
    wait_for(lambda: total(scrape(port), "forkserve_worker_exits_total", reason="reload") >= 10,
             10, what="the old generations' exits counted")
    s = scrape(port)
    assert total(s, "forkserve_reloads_total") == 5
    assert total(s, "forkserve_reload_failures_total") == 0
    assert total(s, "forkserve_generation") == 5
    assert 0 < total(s, "forkserve_last_reload_duration_seconds") < 20


def test_websockets_and_connections(forkserve):
    server = _start(forkserve, "asgi", "-w", "1")
    port = server.metrics_port
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"GET /ws/echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 101")
    idle = server.connect()
    try:
        wait_for(lambda: total(scrape(port), "forkserve_websockets_open") == 1, 5)
        # Connections are reported once a worker tick (about a second).
        wait_for(lambda: total(scrape(port), "forkserve_connections_open") == 2, 5)
        assert total(scrape(port), "forkserve_websockets_total") == 1
    finally:
        s.close()
        idle.close()
    wait_for(lambda: total(scrape(port), "forkserve_websockets_open") == 0, 5)
    assert total(scrape(port), "forkserve_websockets_total") == 1


def test_listen_queue_depth_and_limit(forkserve):
    """Connections the kernel queued while no worker accepts (workers
    stopped with SIGSTOP) are counted from TCP_INFO of the listening socket."""
    server = _start(forkserve, "sync", "-w", "1", "--backlog", "50")
    port = server.metrics_port
    workers = server.workers()
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    clients = []
    try:
        for _ in range(5):
            clients.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        s = wait_for(lambda: (lambda s: s if total(s, "forkserve_listen_queue_length") == 5
                              else None)(scrape(port)), 5, what="5 queued connections")
        assert total(s, "forkserve_listen_queue_limit") == 50
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
        for c in clients:
            c.close()
    wait_for(lambda: total(scrape(port), "forkserve_listen_queue_length") == 0, 5)


def test_workers_do_not_inherit_the_control_listener(forkserve):
    server = _start(forkserve, "sync", "-w", "2")
    for pid in server.workers():
        ports = {c.laddr.port for c in _conns(psutil.Process(pid))
                 if c.laddr}
        assert server.metrics_port not in ports
    master_ports = {c.laddr.port for c in _conns(psutil.Process(server.pid))}
    assert server.metrics_port in master_ports


def test_control_routes_and_unix_socket(forkserve, tmp_path):
    path = str(tmp_path / "metrics.sock")
    server = forkserve(APPS["sync"], "--metrics-bind", f"unix:{path}")

    def ask(raw: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(path)
            s.sendall(raw)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    assert ask(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 200 ")
    assert ask(b"GET /readyz HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nready\n")
    assert ask(b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 404 ")
    assert ask(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
               ).startswith(b"HTTP/1.1 405 ")
    head = ask(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert ask(b"GARBAGE\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert b"forkserve_requests_total" in ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not os.path.exists(path)


def test_usr2_new_master_takes_the_control_listener_over(forkserve, tmp_path):
    """The re-executed master cannot bind metrics_bind while the old one
    holds it; it retries each tick and serves it once the old one is gone."""
    from conftest import stop_handed_over_master

    server = _start(forkserve, "sync", "-w", "1", "-p", str(tmp_path / "fs.pid"))
    port = server.metrics_port
    started = total(scrape(port), "process_start_time_seconds")
    time.sleep(1.1)  # start times one second apart at least
    server.signal(signal.SIGUSR2)
    server.wait_log("Ready:", count=2, timeout=20)
    new_pid = int(wait_for(lambda: (tmp_path / "fs.pid").read_text().strip() != str(server.pid)
                           and (tmp_path / "fs.pid").read_text().strip(), 10))
    try:
        server.wait_log("is in use; retrying")
        assert total(scrape(port), "process_start_time_seconds") == started
        server.signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        wait_for(lambda: _scrape_or_none(port) is not None, 5, what="the new master's listener")
        assert total(scrape(port), "process_start_time_seconds") > started
        assert control_get(port, "/readyz")[0] == 200
    finally:
        stop_handed_over_master(server, new_pid)


def _scrape_or_none(port: int):
    try:
        return scrape(port)
    except OSError:
        return None


def test_every_metric_of_the_grafana_dashboard_is_in_a_real_scrape(forkserve):
    import json
    import re

    dashboard = json.loads((Path(__file__).parent.parent.parent / "conf"
                            / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    wanted = set()
    for e in exprs:
        wanted |= set(re.findall(r"\b((?:forkserve|process)_[a-z_]+)\b", e))
    assert len(wanted) >= 20, wanted
    server = _start(forkserve, "asgi", "-w", "1")
    assert server.get("/")[0] == 200
    exported = {name for name, _ in scrape(server.metrics_port)}
    assert wanted <= exported, wanted - exported


def test_exit_reasons_timeout_and_lifetime(forkserve):
    server = _start(forkserve, "sync", "-w", "1", "--timeout", "1", "--graceful-timeout", "1")
    port = server.metrics_port
    try:
        server.get("/sleep?5", timeout=10)
    except (OSError, AssertionError):
        pass  # the worker was killed under the request
    wait_for(lambda: total(scrape(port), "forkserve_worker_exits_total", reason="timeout") == 1,
             10, what="a timeout exit")
    s = scrape(port)
    assert total(s, "forkserve_worker_exits_total") == 1
    # The request the worker was killed on never ended: not counted.
    assert _requests(s) == 0

    server = _start(forkserve, "sync", "-w", "1", "--max-worker-lifetime", "1")
    wait_for(lambda: total(scrape(server.metrics_port), "forkserve_worker_exits_total",
                           reason="lifetime") >= 1, 10, what="a lifetime exit")


def test_metrics_bind_in_use_or_invalid_is_a_startup_error():
    from conftest import run_forkserve

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_forkserve("-b", f"127.0.0.1:{free_port()}", "--metrics-bind",
                             f"127.0.0.1:{port}", APPS["sync"])
    assert proc.returncode == 1, proc.stderr
    assert f"metrics_bind 127.0.0.1:{port}: Address already in use" in proc.stderr
    proc = run_forkserve("--metrics-bind", "fd://3", "--check-config", APPS["sync"])
    assert proc.returncode == 2 and "metrics_bind" in proc.stderr, proc.stderr


def _conns(proc: psutil.Process):
    """The process's inet sockets (psutil 6 renamed connections())."""
    return (getattr(proc, "net_connections", None) or proc.connections)(kind="inet")

"""The ASGI worker at its connection limits, against real processes:
``worker_connections`` and running out of descriptors (issue 12 item 11)."""

from __future__ import annotations

import resource
import socket
import subprocess
import sys
import time

import pytest

from conftest import APPS, ROOT, free_port, stop_tree, wait_for
from test_asgi_cycle import read_response

pytestmark = pytest.mark.e2e

APP = "asgi_cycle:app"


def _get(s: socket.socket, path: str = "/") -> tuple[int, dict, bytes]:
    s.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    return read_response(s)


def test_worker_connections_evicts_the_longest_idle_connection(forkserve):
    server = forkserve(APP, "-w", "1", "--worker-connections", "4", "--keep-alive", "30")
    idle = [server.connect() for _ in range(4)]
    for s in idle:
        assert _get(s)[0] == 200
        time.sleep(0.05)  # idle[0] has waited longest
    with server.connect() as new:
        assert _get(new)[2] == b"hello"
    idle[0].settimeout(5)
    assert idle[0].recv(100) == b""  # evicted to make room
    for s in idle[1:]:
        assert _get(s)[0] == 200  # the others were kept
        s.close()


def test_worker_connections_pauses_accepting_while_all_are_busy(forkserve):
    """At the limit with every connection in an exchange, a new client
    waits in the backlog; once those exchanges end (their connections kept
    alive, not closed) it is accepted, long before any keep-alive expiry."""
    server = forkserve(APP, "-w", "1", "--worker-connections", "3", "--keep-alive", "30")
    busy = [server.connect() for _ in range(3)]
    for s in busy:
        s.sendall(b"GET /sleep?1.5 HTTP/1.1\r\nHost: t\r\n\r\n")
    time.sleep(0.3)
    start = time.monotonic()
    with server.connect() as new:
        assert _get(new)[2] == b"hello"
        assert 0.8 < time.monotonic() - start < 5
    for s in busy:
        assert read_response(s)[2] == b"slept"
        s.close()


def test_out_of_descriptors_pauses_accepting_and_logs_once(tmp_path):
    """With a low RLIMIT_NOFILE the worker runs out of descriptors: new
    clients wait in the backlog (not accepted and dropped), the log says
    so once, and they are served as soon as descriptors are free."""
    port = free_port()
    log = tmp_path / "error.log"
    env = {"PYTHONPATH": f"{ROOT}:{APPS}", "PATH": "/usr/bin:/bin"}

    def low_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen([sys.executable, "-m", "forkserve", "-w", "1", "-b", f"127.0.0.1:{port}",
                             "--error-logfile", str(log), "--keep-alive", "60", APP],
                            cwd=str(APPS), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            preexec_fn=low_limit)
    held: list[socket.socket] = []
    try:
        wait_for(lambda: log.exists() and "Ready:" in log.read_text(), 15, what="server ready")
        pid = _worker_pids(proc.pid)
        waiting = None
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=1.0)
            try:
                assert _get(s)[0] == 200
            except socket.timeout:
                waiting = s  # not accepted: the worker is out of descriptors
                break
            held.append(s)
        assert waiting is not None, "never ran out of descriptors"
        assert len(held) > 20
        # It stays queued, not accepted-and-closed, while descriptors are short.
        time.sleep(1.5)
        waiting.settimeout(0.2)
        with pytest.raises(socket.timeout):
            waiting.recv(100)
        for s in held[:10]:
            s.close()
        waiting.settimeout(5)
        status, _, body = read_response(waiting)
        assert (status, body) == (200, b"hello")
        waiting.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert _get(s)[0] == 200
        text = log.read_text()
        assert text.count("accept() failed") == 1, text
        assert "Too many open files" in text and "pausing accepts" in text
        assert _worker_pids(proc.pid) == pid
    finally:
        for s in held:
            s.close()
        stop_tree(proc)


def _worker_pids(master: int) -> list[int]:
    import psutil
    return sorted(c.pid for c in psutil.Process(master).children())

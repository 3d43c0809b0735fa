"""Hostile clients of the master's control listener cannot delay
supervision: 200 connections that send nothing (or half a request head)
and one that sends 1 MB leave the respawn time after a kill -9 unchanged."""

from __future__ import annotations

import os
import signal
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent))
from conftest import free_port, wait_for  # noqa: E402
from scrape import control_get  # noqa: E402

pytestmark = pytest.mark.e2e

# forkserve/master/control.py
MAX_CONNECTIONS = 64


def _respawn_time(server) -> float:
    """kill -9 one worker; seconds until its replacement is running."""
    before = set(server.workers())
    victim = min(before)
    t = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    while True:
        now = set(server.workers())
        if len(now) == len(before) and victim not in now:
            return time.monotonic() - t
        assert time.monotonic() - t < 10, "no respawn within 10 s"
        time.sleep(0.002)


def _control_conns(server) -> int:
    return sum(1 for c in _conns(psutil.Process(server.pid))
               if c.laddr and c.laddr.port == server.metrics_port
               and c.status == psutil.CONN_ESTABLISHED)


def test_silent_and_flooding_scrapers_do_not_delay_a_respawn(forkserve):
    port = free_port()
    server = forkserve("wsgi_basic:application", "-w", "2", "--metrics-bind", f"127.0.0.1:{port}")
    server.metrics_port = port
    baseline = []
    for _ in range(3):
        baseline.append(_respawn_time(server))
        server.wait_workers(2)
        time.sleep(0.2)

    silent = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
    # Half of them start a request head and stop (a master that read them
    # blocking would hang on the first one).
    for s in silent[::2]:
        s.sendall(b"GET /metr")
    flood_result = []

    def flood():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (1 << 20))
                flood_result.append(s.recv(100))
        except OSError as exc:  # the master closed it mid-send: reset
            flood_result.append(exc)

    flooder = threading.Thread(target=flood)
    flooder.start()
    try:
        with_hostile = []
        for _ in range(3):
            with_hostile.append(_respawn_time(server))
            server.wait_workers(2)
            time.sleep(0.2)
        # The master keeps a bounded number of them, and still answers.
        assert _control_conns(server) <= MAX_CONNECTIONS + 1
        assert control_get(port, "/livez")[0] == 200
    finally:
        flooder.join(10)
        for s in silent:
            s.close()
    base, hostile = statistics.median(baseline), statistics.median(with_hostile)
    assert hostile <= max(3 * base, base + 0.25), (baseline, with_hostile)
    # The flood got a 431 (or a reset while it was still sending), not a hang.
    assert flood_result and (isinstance(flood_result[0], OSError)
                             or flood_result[0].startswith(b"HTTP/1.1 431")), flood_result
    # Silent connections are closed after their 2 s.
    wait_for(lambda: _control_conns(server) == 0, 5, what="silent connections closed")


def test_a_slow_scraper_is_cut_off_and_others_are_served(forkserve):
    port = free_port()
    server = forkserve("wsgi_basic:application", "--metrics-bind", f"127.0.0.1:{port}")
    server.metrics_port = port
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        slow.sendall(b"GET /metr")
        t = time.monotonic()
        assert control_get(port, "/metrics")[0] == 200  # served meanwhile
        assert slow.recv(100) == b""  # closed by the master at its deadline
        assert 1.5 < time.monotonic() - t < 4
    finally:
        slow.close()
    assert server.workers()


def _conns(proc: psutil.Process):
    """The process's inet sockets (psutil 6 renamed connections())."""
    return (getattr(proc, "net_connections", None) or proc.connections)(kind="inet")

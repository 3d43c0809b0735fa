"""The ASGI worker's graceful drain and deadlines against real processes:
nothing a client or a proxy already sent is lost (issue 11 item 4)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from test_asgi_cycle import read_response

pytestmark = pytest.mark.e2e

APP = "asgi_cycle:app"


def test_idle_keepalive_connection_is_served_after_hup(forkserve):
    """A proxy's idle upstream connection is not closed under it when the
    worker drains: its next request is answered, with Connection: close."""
    server = forkserve(APP, "-w", "1", "--keep-alive", "10")
    old = server.workers()[0]
    with server.connect() as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(s)[2] == str(old).encode()
        server.signal(signal.SIGHUP)
        server.wait_log("Reload complete")
        time.sleep(0.3)
        assert old in server.workers()  # draining, not gone
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body = read_response(s)
        assert (status, body) == (200, str(old).encode())
        assert headers["connection"] == "close"
        assert s.recv(100) == b""
    server.wait_workers(1, exclude={old})


def test_draining_worker_closes_idle_connection_at_its_keepalive(forkserve):
    server = forkserve(APP, "-w", "1", "--keep-alive", "2")
    old = server.workers()[0]
    with server.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(s)
        start = time.monotonic()
        os.kill(old, signal.SIGTERM)
        s.settimeout(10)
        assert s.recv(100) == b""
        assert 1.5 < time.monotonic() - start < 6
    server.wait_workers(1, exclude={old})


def test_request_in_the_kernel_at_an_expired_deadline_is_served(forkserve):
    """The loop was blocked past an idle connection's keep-alive deadline
    while its next request arrived: it is read, not closed unread."""
    server = forkserve(APP, "-w", "1", "--keep-alive", "1")
    with server.connect() as idle, server.connect() as blocker:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(idle)
        blocker.sendall(b"GET /block?2.5 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(1.5)  # the loop is blocked; idle's deadline passes
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(blocker)[2] == b"unblocked"
        assert read_response(idle)[::2] == (200, b"hello")

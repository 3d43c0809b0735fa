"""A graceful stop (TERM of the master) seen from a balancer's idle
upstream connection: the request it sends next is answered, with
``Connection: close``, and only then is the connection closed; the
listener is closed at once, so new connections are refused and a balancer
resends them elsewhere (tests/e2e/test_netbed.py measures that across hosts)."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from conftest import parse_response, read_until_close

pytestmark = pytest.mark.e2e

APPS = {"sync": "wsgi_chaos:application", "asgi": "asgi_chaos:app"}


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_idle_upstream_connection_is_answered_once_after_term(forkserve, kind):
    server = forkserve(APPS[kind], "-k", kind, "-w", "1", "--keep-alive", "10",
                       "--graceful-timeout", "20")
    with server.connect(20) as s:
        s.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first.lower()
        server.signal(signal.SIGTERM)
        # The listener goes first: a new connection is refused.
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), 1).close()
            except ConnectionRefusedError:
                break
            assert time.monotonic() < deadline, "still accepting after TERM"
            time.sleep(0.05)
        # The idle keep-alive connection is still served, once, and says so.
        s.sendall(b"POST /pid HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        status, headers, body = parse_response(read_until_close(s), "POST")
        assert status == 200 and headers.get("connection") == "close"
        assert body == first.rpartition(b"\r\n\r\n")[2]
    assert server.wait_exit(25) == 0

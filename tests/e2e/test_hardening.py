"""Malformed requests against both worker kinds, over real sockets.

Every case runs in three deliveries (one write, byte by byte, split at every
CR and LF) and must give the expected status, a closed connection, and a
canary request appended after the bad one that never reaches the app."""

from __future__ import annotations

import re
import socket
import time

import pytest

from conftest import APPS, ROOT, free_port, read_until_close, stop_tree, wait_for

sys_path_unit = ROOT / "tests" / "unit"
import sys  # noqa: E402

sys.path.insert(0, str(sys_path_unit))
from test_request_reader import BAD  # noqa: E402

pytestmark = pytest.mark.e2e

CANARY = b"GET /canary HTTP/1.1\r\nHost: c\r\n\r\n"

EXTRA = [
    # pipelining after an error: the second request is the canary itself
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400),
    # Expect and Upgrade
    (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue, foo\r\nContent-Length: 1\r\n\r\nx", 417),
    (b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings, close;\r\n\r\n", 400),
    # smuggling classics
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nX: y\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nA\r\n0\r\nX-A: \x01\r\n\r\n", 400),
    # sizes
    (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX-\x80: y\r\n\r\n", 400),
    (b"GET\r\n\r\n", 400),
    (b"/ HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
]
CASES = BAD + EXTRA
assert len(CASES) >= 80


def _pieces(data: bytes, how: str):
    if how == "whole":
        return [data]
    if how == "bytewise":
        return [data[i:i + 1] for i in range(len(data))]
    return [p for p in re.split(rb"(\r|\n)", data) if p]


@pytest.fixture(scope="module", params=["sync", "asgi"])
def target(request, tmp_path_factory):
    """One server per worker kind for the whole module, stopped by PID."""
    import os
    import subprocess
    tmp = tmp_path_factory.mktemp(f"hard-{request.param}")
    record = tmp / "record.log"
    record.write_text("")
    port = free_port()
    app = "recorder:wsgi" if request.param == "sync" else "recorder:asgi"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]),
               FS_RECORD=str(record))
    log = tmp / "error.log"
    proc = subprocess.Popen([sys.executable, "-m", "forkserve", "-k", request.param, "-w", "1",
                             "-b", f"127.0.0.1:{port}", "--error-logfile", str(log),
                             "--header-timeout", "5", "--write-timeout", "3", app],
                            cwd=str(APPS), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ready:" in log.read_text() if log.exists() else False, 15,
                 what="server ready")
        yield {"kind": request.param, "port": port, "record": record, "log": log, "proc": proc}
    finally:
        stop_tree(proc)


def _exchange(port: int, pieces) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for p in pieces:
                s.sendall(p)
            # Done sending: the server may stop draining our bytes and close.
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed early: fine
        return read_until_close(s)


@pytest.mark.parametrize("data, status", CASES, ids=[repr(d[:30]) for d, _ in CASES])
@pytest.mark.parametrize("how", ["whole", "bytewise", "crlf-split"])
def test_malformed_request(target, data, status, how):
    if how != "whole" and len(data) > 2000:
        how = "whole"  # the size cases are about size, not splitting
    reply = _exchange(target["port"], _pieces(data + CANARY, how))
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert reply.count(b"HTTP/1.1 ") == 1, reply  # one answer, nothing after it
    assert b"connection: close" in reply.lower()
    assert "/canary" not in target["record"].read_text()


def test_the_server_still_serves(target):
    reply = _exchange(target["port"], [b"GET /fine HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"])
    assert reply.startswith(b"HTTP/1.1 200")
    assert "GET /fine" in target["record"].read_text()


def test_slowloris_does_not_starve_fresh_clients(target):
    port = target["port"]
    dribblers = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
            dribblers.append(s)
        for s in dribblers:
            s.sendall(b"X-Slow: 1\r\n")
        start = time.monotonic()
        reply = _exchange(port, [b"GET /fresh HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"])
        assert reply.startswith(b"HTTP/1.1 200")
        assert time.monotonic() - start < 1.0
        # header_timeout (5 s) ends them with a 408.
        s = dribblers[0]
        s.settimeout(10)
        assert s.recv(4096).startswith(b"HTTP/1.1 408")
    finally:
        for s in dribblers:
            s.close()


def test_slow_reader_is_dropped_and_the_worker_serves_on(target):
    port = target["port"]
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        stalled_at = time.monotonic()
        time.sleep(0.5)
        # Meanwhile others are served: at once by the ASGI loop; by the sync
        # worker once write_timeout (3 s) has dropped the stalled client.
        reply = _exchange(port, [b"GET /other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"])
        assert reply.startswith(b"HTTP/1.1 200")
        assert time.monotonic() - stalled_at < 6
        # Stall past write_timeout for sure, then read what is left: the
        # server gave up on us, so it is far short of 8 MiB.
        time.sleep(max(0.0, 4.5 - (time.monotonic() - stalled_at)))
        got = 0
        s.settimeout(5)
        while True:
            try:
                chunk = s.recv(1 << 20)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got += len(chunk)
        assert got < 32 << 20
    finally:
        s.close()

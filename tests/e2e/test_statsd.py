"""statsd from real forkserve processes, both worker kinds: a statsd server
that is down or stops reading costs nothing, and the error log's errors
are counted as gunicorn counts them.  (The metric names and types side by
side with gunicorn 27 are in test_gunicorn_compat.py.)"""

from __future__ import annotations

import signal
import socket
import time

import pytest

pytestmark = pytest.mark.e2e

APPS = {"sync": "wsgi_basic:application", "asgi": "asgi_basic:app"}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_a_statsd_server_down_or_not_reading_costs_nothing(forkserve, tmp_path, kind):
    """statsd_host on a UDP port nobody listens on (ECONNREFUSED), a unix
    path that does not exist (ENOENT), and a unix socket whose owner never
    reads (its 10-datagram queue fills: EAGAIN): 100 keep-alive requests
    are served, no error is logged, the workers are the same."""
    closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stuck.bind(str(tmp_path / "stuck.sock"))
    try:
        for target in (f"127.0.0.1:{closed_port}", f"unix:{tmp_path / 'missing.sock'}",
                       f"unix:{tmp_path / 'stuck.sock'}"):
            server = forkserve(APPS[kind], "-k", kind, "-w", "1", "--statsd-host", target,
                               "--enable-backlog-metric")
            pids = server.wait_workers(1)
            start = time.monotonic()
            with server.connect() as conn:
                reader = conn.makefile("rb")
                for _ in range(100):
                    conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    status = reader.readline()
                    assert status.startswith(b"HTTP/1.1 200"), status
                    length = 0
                    while (line := reader.readline()) != b"\r\n":
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    reader.read(length)
            took = time.monotonic() - start
            assert took < 30, f"{target}: 100 requests took {took:.1f}s"
            assert server.workers() == pids
            assert "[ERROR]" not in server.log and "Traceback" not in server.log, server.log
            server.stop()
    finally:
        stuck.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_an_app_error_counts_as_gunicorn_log_exception(forkserve, tmp_path, kind):
    """gunicorn counts its error log: an app that raises is one
    gunicorn.log.exception (forkserve logs the traceback as text; still
    an exception, as gunicorn's log.exception is), beside the request's
    500 status counter."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    try:
        server = forkserve(APPS[kind], "-k", kind, "-w", "1", "--statsd-host",
                           f"127.0.0.1:{listener.getsockname()[1]}")
        assert server.get("/error")[0] == 500
        lines: list[bytes] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                any(b"gunicorn.log.exception" in x for x in lines)
                and any(b"status.500" in x for x in lines)):
            try:
                lines += listener.recv(65536).split(b"\n")
            except socket.timeout:
                pass
        names = [x.split(b":")[0] for x in lines]
        assert b"gunicorn.log.exception" in names, lines
        assert b"gunicorn.request.status.500" in names, lines
        assert b"gunicorn.log.error" not in names, lines
    finally:
        listener.close()


@pytest.mark.timeout(60)
def test_a_reload_applies_new_statsd_settings(forkserve, tmp_path):
    """HUP re-reads statsd_prefix from the config file: the new generation
    of workers sends under the new prefix."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(0.2)
    conf = tmp_path / "conf.py"
    host = f"127.0.0.1:{listener.getsockname()[1]}"

    def requests_under(prefix: str) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert server.get("/")[0] == 200
            try:
                while True:
                    if f"{prefix}.gunicorn.requests:1|c".encode() in listener.recv(65536):
                        return True
            except socket.timeout:
                pass
        return False

    try:
        conf.write_text(f"statsd_host = {host!r}\nstatsd_prefix = 'one'\n")
        server = forkserve(APPS["sync"], "-c", str(conf), "-w", "1")
        old = server.wait_workers(1)
        assert requests_under("one")
        conf.write_text(f"statsd_host = {host!r}\nstatsd_prefix = 'two'\n")
        server.signal(signal.SIGHUP)
        server.wait_workers(1, exclude=set(old), timeout=20)
        assert requests_under("two")
    finally:
        listener.close()

"""``wsgi.errors`` goes to the error log, as in gunicorn, and never blocks.

PEP 3333 leaves the destination to the server; gunicorn gives apps its
error log's stream, so ``errorlog`` is where operators look.  Writing to the
process's stderr instead sent it elsewhere, and a stderr pipe nobody drained
stopped the worker in the middle of the request.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import APPS, ROOT, SERVER_ENV, free_port, parse_response, read_until_close, wait_for

pytestmark = pytest.mark.e2e


def test_app_lines_reach_the_error_log_file(forkserve):
    server = forkserve("wsgi_basic:application", "-w", "1", "--threads", "2")
    pids = server.workers()
    assert server.get("/stderr")[0] == 204
    wait_for(lambda: "two" in server.log, 5, what="the app's lines in the error log")
    lines = [ln for ln in server.log.splitlines() if "[ERROR]" in ln]
    tail = [ln.rsplit("] ", 1)[-1] for ln in lines]
    assert tail[-4:] == ["to wsgi.errors", "a partial line, then its end", "one", "two"], lines
    # Nothing of it went to the process's own stderr.
    assert "to wsgi.errors" not in server.stdout_path.read_text()
    assert server.workers() == pids


def _get(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return parse_response(read_until_close(s))[0]


def test_a_stderr_pipe_nobody_reads_does_not_stop_requests(tmp_path):
    port = free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS)])
    for var in SERVER_ENV:
        env.pop(var, None)
    # errorlog "-" is this pipe; nothing reads it, so it fills after 64 KiB.
    proc = subprocess.Popen([sys.executable, "-m", "forkserve", "-b", f"127.0.0.1:{port}",
                             "-w", "1", "--error-logfile", "-", "wsgi_basic:application"],
                            cwd=str(APPS), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def up():
            try:
                return _get(port, "/") == 200
            except OSError:
                return False
        wait_for(up, 15, what="forkserve to serve")
        started = time.monotonic()
        # 40 × 8 KB: five times what the pipe holds.
        statuses = [_get(port, "/stderr-big") for _ in range(40)]
        assert statuses == [204] * 40
        assert time.monotonic() - started < 20
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stderr.close()

"""The size limits against gunicorn 27, over the wire.

forkserve takes gunicorn's setting names (``limit_request_line``,
``limit_request_field_size``, ``limit_request_fields``), so one value must
refuse the same requests under either server.  The same bytes, at each
limit minus one, the limit and the limit plus one, go to a real gunicorn
(from the reference venv in /tmp/peers) and to forkserve's two worker kinds,
all serving the same app; every server must give the same status, and that
status must be the expected one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from conftest import APPS, ROOT, free_port, read_until_close, stop_tree, wait_for

pytestmark = pytest.mark.e2e

PEERS_PYTHON = Path("/tmp/peers/bin/python")


class Config(NamedTuple):
    name: str
    line: int
    field_size: int
    fields: int

    def args(self) -> list[str]:
        return ["--limit-request-line", str(self.line),
                "--limit-request-field_size", str(self.field_size),
                "--limit-request-fields", str(self.fields)]


CONFIGS = [
    Config("defaults", 4094, 8190, 100),   # both servers' defaults
    Config("small", 100, 200, 10),
]


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=str(APPS), env=env, stdin=subprocess.DEVNULL,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _status(port: int, data: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        reply = read_until_close(s)
    assert reply.startswith(b"HTTP/1."), reply[:200]
    return int(reply[9:12])


def _ready(port: int, proc: subprocess.Popen) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"server exited with {proc.returncode}")
    try:
        return _status(port, b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n") == 200
    except OSError:
        return False


@pytest.fixture(scope="module", params=CONFIGS, ids=[c.name for c in CONFIGS])
def servers(request, tmp_path_factory) -> Iterator[tuple[Config, dict[str, int]]]:
    """gunicorn (sync) and forkserve (sync and asgi) with the same limits."""
    if not PEERS_PYTHON.exists():
        pytest.skip("reference gunicorn venv /tmp/peers is absent")
    check = subprocess.run([str(PEERS_PYTHON), "-c", "import gunicorn"], capture_output=True)
    if check.returncode != 0:
        pytest.skip("gunicorn is not installed in /tmp/peers")
    cfg: Config = request.param
    tmp = tmp_path_factory.mktemp(f"limits-{cfg.name}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    env.pop("FORKSERVE_CMD_ARGS", None)
    env.pop("GUNICORN_CMD_ARGS", None)
    ports = {name: free_port() for name in ("gunicorn", "sync", "asgi")}
    procs = {
        "gunicorn": _start([str(PEERS_PYTHON), "-m", "gunicorn", "-w", "1",
                            "--http-parser", "python",
                            "-b", f"127.0.0.1:{ports['gunicorn']}", *cfg.args(),
                            "fuzz_target:wsgi"], tmp / "gunicorn.log", env),
        "sync": _start([sys.executable, "-m", "forkserve", "-k", "sync", "-w", "1",
                        "-b", f"127.0.0.1:{ports['sync']}", *cfg.args(),
                        "fuzz_target:wsgi"], tmp / "sync.log", env),
        "asgi": _start([sys.executable, "-m", "forkserve", "-k", "asgi", "-w", "1",
                        "-b", f"127.0.0.1:{ports['asgi']}", *cfg.args(),
                        "fuzz_target:asgi"], tmp / "asgi.log", env),
    }
    try:
        for name, proc in procs.items():
            wait_for(lambda: _ready(ports[name], proc), 20, what=f"{name} to serve")
        yield cfg, ports
    finally:
        for proc in procs.values():
            stop_tree(proc)


def _field_line(count: int, ows: bytes) -> bytes:
    """A field line counted as ``count`` bytes by gunicorn: the line as sent
    (name, colon, whitespace, value) plus its CRLF."""
    return b"X-Big:" + ows + b"v" * (count - 2 - 6 - 2 * len(ows)) + ows


def _cases(cfg: Config) -> list[tuple[str, bytes, int]]:
    cases = []
    for delta in (-1, 0, 1):
        refused = delta > 0
        line = b"GET /?" + b"a" * (cfg.line + delta - 15) + b" HTTP/1.1"
        assert len(line) == cfg.line + delta
        for lead in (b"", b"\r\n"):
            cases.append((f"request-line{delta:+d}{'-after-crlf' if lead else ''}",
                          lead + line + b"\r\nHost: a\r\nConnection: close\r\n\r\n",
                          414 if refused else 200))
        for ows in (b" ", b"", b" \t "):
            field = _field_line(cfg.field_size + delta, ows)
            assert len(field) + 2 == cfg.field_size + delta
            cases.append((f"field-size{delta:+d}-ows{len(ows)}",
                          b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
                          + field + b"\r\n\r\n", 431 if refused else 200))
        extra = b"".join(b"X-%d: v\r\n" % i for i in range(cfg.fields + delta - 2))
        cases.append((f"fields{delta:+d}",
                      b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n" + extra + b"\r\n",
                      431 if refused else 200))
    return cases


def test_each_limit_refuses_exactly_what_gunicorn_refuses(servers):
    cfg, ports = servers
    problems = []
    for name, data, expected in _cases(cfg):
        got = {server: _status(port, data) for server, port in ports.items()}
        if set(got.values()) != {expected}:
            problems.append(f"{name}: expected {expected}, got {got}")
    assert not problems, "\n".join(problems)

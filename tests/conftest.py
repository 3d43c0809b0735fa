"""Shared fixtures: start real forkserve processes and always clean them up.

``forkserve`` (the fixture) is a factory::

    server = forkserve("wsgi_basic:application", "-w", "2")
    status, headers, body = server.get("/")
    server.signal(signal.SIGHUP)

Each server runs ``python -m forkserve`` with ``tests/apps`` as its working
directory, on a free loopback port (or a unix socket), with its error log in
a file.  At teardown every process it started (the master, and every worker
PID ever seen) is stopped by PID: TERM, then KILL.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import psutil
import pytest
from hypothesis import HealthCheck, settings

APPS = Path(__file__).parent / "apps"
ROOT = Path(__file__).parent.parent
#: Environment variables forkserve reads settings from (gunicorn's too): a
#: test that wants one passes it explicitly.
SERVER_ENV = ("FORKSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT",
              "FORWARDED_ALLOW_IPS")

# Property-based tests: "ci" (the default) is derandomized, so every run
# tries the same examples and a failure reproduces; "deep" is for long runs
# (pytest --hypothesis-profile=deep), with fresh random examples each time.
# No example database either way: a failure prints its reproduce blob.
settings.register_profile(
    "ci", max_examples=400, derandomize=True, deadline=None, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "deep", max_examples=20000, derandomize=False, deadline=None, database=None,
    print_blob=True, suppress_health_check=[HealthCheck.too_slow])
# Loaded before hypothesis' pytest plugin reads --hypothesis-profile, which wins.
settings.load_profile("ci")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def read_until_close(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a reset ends it too)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def stop_handed_over_master(server: "Server", new_pid: int) -> None:
    """Stop a master that a USR2 handover started (not the test's child):
    its workers join ``server``'s cleanup, then TERM and wait for it."""
    for child in psutil.Process(new_pid).children():
        server.seen_pids.add(child.pid)
    os.kill(new_pid, signal.SIGTERM)
    wait_for(lambda: not psutil.pid_exists(new_pid) or
             psutil.Process(new_pid).status() == psutil.STATUS_ZOMBIE, 15,
             what="the new master to stop")


def stop_tree(proc: subprocess.Popen, extra_pids: set[int] | frozenset[int] = frozenset()) -> None:
    """TERM ``proc`` (a forkserve master, or a wrapper of one), wait, then
    KILL it and every descendant and extra PID still alive."""
    pids = {proc.pid} | set(extra_pids)
    try:
        pids.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
    except psutil.NoSuchProcess:
        pass
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            p = psutil.Process(pid)
            if p.status() != psutil.STATUS_ZOMBIE:
                p.kill()
        except psutil.NoSuchProcess:
            pass


class Server:
    """A running forkserve master started by a test."""

    def __init__(self, proc: subprocess.Popen, port: int | None, unix: str | None,
                 log_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.unix = unix
        self.log_path = log_path
        self.seen_pids: set[int] = {proc.pid}

    # -- processes -------------------------------------------------------

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def workers(self) -> list[int]:
        """PIDs of the master's live worker children (not zombies)."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = []
        for c in children:
            try:
                if c.status() != psutil.STATUS_ZOMBIE:
                    pids.append(c.pid)
            except psutil.NoSuchProcess:
                pass
        self.seen_pids.update(pids)
        return sorted(pids)

    def wait_workers(self, count: int, timeout: float = 10.0, exclude: set[int] | None = None) -> list[int]:
        """Wait until exactly ``count`` workers run (none of ``exclude``)."""
        def ok():
            pids = self.workers()
            if len(pids) == count and not (exclude and set(pids) & exclude):
                return (pids,)  # truthy even when no worker is wanted
            return None
        return wait_for(ok, timeout, what=f"{count} workers")[0]

    def wait_log(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        wait_for(lambda: self.log.count(text) >= count, timeout, what=f"{text!r} in the log")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """TERM the master, then KILL anything it left behind."""
        self.workers()
        stop_tree(self.proc, self.seen_pids)

    # -- clients ---------------------------------------------------------

    def connect(self, timeout: float = 10.0) -> socket.socket:
        if self.unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect(self.unix)
        else:
            s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send ``data`` on a new connection; return all bytes until the server closes."""
        with self.connect(timeout) as s:
            s.sendall(data)
            return read_until_close(s)

    def request(self, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None, timeout: float = 10.0):
        """One request with Connection: close; returns (status, headers, body)."""
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        if body or method in ("POST", "PUT"):
            head.append(f"Content-Length: {len(body)}")
        raw = self.raw(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body, timeout)
        return parse_response(raw, method)

    def get(self, path: str = "/", **kw):
        return self.request("GET", path, **kw)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def parse_response(raw: bytes, method: str = "GET"):
    """Parse one HTTP/1.1 response: (status, {lower-name: value}, body)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError(f"no complete response head in {raw[:200]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body += rest[:size]
            rest = rest[size + 2:]
    elif "content-length" in headers:
        body = rest[:int(headers["content-length"])]
    else:
        body = rest
    return status, headers, body


@pytest.fixture
def forkserve(tmp_path: Path) -> Iterator:
    """Factory starting forkserve; see the module docstring."""
    servers: list[Server] = []

    def start(app: str, *args: str, unix: bool = False, env: dict[str, str] | None = None,
              wait: bool = True, cwd: Path | str | None = None, bind: bool = True,
              timeout: float = 15.0) -> Server:
        port = None
        sock_path = None
        cmd = [sys.executable, "-m", "forkserve"]
        if bind:
            if unix:
                sock_path = str(tmp_path / f"fs-{len(servers)}.sock")
                cmd += ["-b", f"unix:{sock_path}"]
            else:
                port = free_port()
                cmd += ["-b", f"127.0.0.1:{port}"]
        cmd += ["--error-logfile", str(tmp_path / f"error-{len(servers)}.log")]
        cmd += list(args)
        if app:
            cmd.append(app)
        full_env = dict(os.environ)
        full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS)])
        for var in SERVER_ENV:
            full_env.pop(var, None)
        full_env.update(env or {})
        log_path = tmp_path / f"error-{len(servers)}.log"
        out = open(tmp_path / f"stdout-{len(servers)}.log", "wb")
        proc = subprocess.Popen(cmd, cwd=str(cwd or APPS), env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Server(proc, port, sock_path, log_path)
        server.stdout_path = tmp_path / f"stdout-{len(servers)}.log"
        servers.append(server)
        if wait:
            try:
                wait_for(lambda: "Ready:" in server.log or proc.poll() is not None,
                         timeout, what="forkserve to be ready")
            except AssertionError:
                raise AssertionError(f"forkserve not ready; log:\n{server.log}")
            if proc.poll() is not None:
                raise AssertionError(f"forkserve exited with {proc.returncode}; log:\n"
                                     f"{server.log}\n{server.stdout_path.read_text()}")
            server.workers()
        return server

    yield start
    for server in servers:
        server.stop()


def run_forkserve(*args: str, cwd: Path | str | None = None, env: dict[str, str] | None = None,
                  timeout: float = 30.0) -> subprocess.CompletedProcess:
    """Run forkserve to completion (for --check-config, bad configs...)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(APPS)])
    for var in SERVER_ENV:
        full_env.pop(var, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "forkserve", *args], cwd=str(cwd or APPS),
                          env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)

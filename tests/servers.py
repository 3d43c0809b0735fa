"""Servers the e2e tests run besides the ``forkserve`` fixture's: forkserve
and a reference server (gunicorn for WSGI, uvicorn for ASGI) serving the
same app side by side for the differential tests, and nginx in front of any
of them.  Each is a real process on loopback, stopped by PID.

Unlike the ``forkserve`` fixture these are not tied to one test, so a test
module can share one set of processes between its tests::

    with differential(tmp, "flaskapp:app", "wsgi", cwd=FRAMEWORKS) as pair:
        for name, url in pair.targets("nginx"): ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from conftest import APPS, ROOT, free_port, stop_tree, wait_for

FRAMEWORKS = APPS / "frameworks"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def nginx_available() -> bool:
    return os.path.exists(NGINX)


# -- backends ---------------------------------------------------------------

@dataclass
class Backend:
    """One server process (a forkserve master, gunicorn or uvicorn) on a
    loopback port."""

    name: str
    proc: subprocess.Popen
    port: int
    log_path: Path
    seen_pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def workers(self) -> list[int]:
        """PIDs of the live children (the workers of a pre-fork server)."""
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []
        pids = sorted(c.pid for c in children if _alive(c))
        self.seen_pids.update(pids)
        return pids

    def stop(self) -> None:
        self.workers()
        stop_tree(self.proc, self.seen_pids)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def server_command(server: str, app: str, port: int, kind: str, *args: str) -> list[str]:
    """The command line serving ``app`` on 127.0.0.1:``port`` with one worker.

    ``server`` is ``forkserve`` or ``reference``: gunicorn's gthread worker
    for WSGI (the model forkserve's sync worker follows: keep-alive, threads),
    uvicorn with httptools and uvloop for ASGI.  Both get forkserve's
    keep-alive timeout, and a short graceful stop so that a test that left
    a request hanging does not slow the teardown."""
    bind = f"127.0.0.1:{port}"
    if server == "forkserve":
        return [sys.executable, "-m", "forkserve", "-b", bind, "-w", "1",
                "-k", "sync" if kind == "wsgi" else "asgi", "--graceful-timeout", "3",
                *args, app]
    if kind == "wsgi":
        return [sys.executable, "-m", "gunicorn", "-b", bind, "-w", "1", "-k", "gthread",
                "--threads", "2", "--keep-alive", "5", "--graceful-timeout", "3",
                # Not a control socket in $HOME shared by every gunicorn.
                "--no-control-socket", *args, app]
    return [sys.executable, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port),
            "--http", "httptools", "--loop", "uvloop",
            "--timeout-keep-alive", "5", "--timeout-graceful-shutdown", "3",
            "--no-access-log", *args, app]


def spawn(name: str, cmd: list[str], port: int, log_path: Path, cwd: Path,
          env: dict[str, str] | None = None) -> Backend:
    """Start ``cmd`` with its output in ``log_path``; do not wait for it."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    full_env.pop("FORKSERVE_CMD_ARGS", None)
    full_env.update(env or {})
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=full_env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Backend(name, proc, port, log_path, {proc.pid})


def wait_serving(backend: Backend, path: str = "/", timeout: float = 60.0) -> None:
    """Wait until ``backend`` answers ``path`` with any HTTP response."""
    def answered():
        if backend.proc.poll() is not None:
            raise AssertionError(f"{backend.name} exited with {backend.proc.returncode}:\n"
                                 f"{backend.log[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", backend.port), timeout=5) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          f"Connection: close\r\n\r\n".encode())
                return s.recv(12).startswith(b"HTTP/1.1 ")
        except OSError:
            return False
    try:
        wait_for(answered, timeout, interval=0.1, what=f"{backend.name} to serve")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{backend.log[-3000:]}") from None


# -- nginx ------------------------------------------------------------------

@dataclass
class Nginx:
    """An nginx master started by a test, in its own prefix directory."""

    proc: subprocess.Popen
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        try:
            return (self.prefix / "nginx-error.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """QUIT (finish what is in flight), then what stop_tree does."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        stop_tree(self.proc)


def shipped_site(upstream_socket: str, port: int) -> str:
    """conf/nginx.conf with its listen port and upstream socket replaced."""
    site = (ROOT / "conf" / "nginx.conf").read_text()
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("unix:/run/forkserve/forkserve.sock", f"unix:{upstream_socket}")
    assert f"unix:{upstream_socket}" in site and f"127.0.0.1:{port}" in site
    return site


def proxy_site(upstream: str, port: int) -> str:
    """A plain reverse proxy to ``upstream`` (host:port or unix:path) with
    upstream keep-alive and WebSocket upgrades on every path, as the
    differential tests put in front of both servers alike."""
    return f"""
upstream backend {{
    server {upstream} max_fails=0;
    keepalive 8;
    # Below both servers' keep-alive timeout (5 s): see conf/nginx.conf.
    keepalive_timeout 4s;
}}
map $http_upgrade $connection_upgrade {{
    default upgrade;
    ''      '';
}}
server {{
    listen 127.0.0.1:{port};
    client_max_body_size 64m;
    location / {{
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_read_timeout 30s;
        proxy_pass http://backend;
    }}
}}
"""


def start_nginx(prefix: Path, site: str, port: int, user: str = "root") -> Nginx:
    """Start nginx serving ``site`` (a server block and what it needs) from
    the directory ``prefix``; wait until it listens on ``port``."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "site.conf").write_text(site)
    # nginx makes the temporary directories itself, owned by ``user``; it
    # ignores ``user`` (with a warning) when not started as root.
    (prefix / "nginx.conf").write_text(f"""
user {user};
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/nginx-error.log;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {prefix}/site.conf;
}}
""")
    proc = subprocess.Popen([NGINX, "-c", str(prefix / "nginx.conf"), "-p", str(prefix),
                             "-g", "daemon off;"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    nginx = Nginx(proc, port, prefix)
    _wait_listening("nginx", proc, port, lambda: nginx.error_log, nginx.stop)
    return nginx


def _wait_listening(name: str, proc: subprocess.Popen, port: int, log, stop) -> None:
    """Until ``proc`` accepts on ``port``; if it exits or never does, stop
    it (by PID) and fail with its log."""
    def listening():
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{log()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return True
        return False
    try:
        wait_for(listening, 15, what=f"{name} to listen")
    except BaseException:
        stop()
        raise


# -- HAProxy, speaking the PROXY protocol to its server ----------------------

@dataclass
class HAProxy:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        stop_tree(self.proc)


def start_haproxy(prefix: Path, upstream_port: int, send_proxy: str = "send-proxy",
                  mode: str = "http") -> HAProxy:
    """HAProxy on a free loopback port in front of 127.0.0.1:``upstream_port``,
    sending it a PROXY header on each connection (``send-proxy`` for v1,
    ``send-proxy-v2`` for v2); in the foreground, stopped by PID."""
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = prefix / "haproxy.cfg"
    conf.write_text(f"""
global
    maxconn 256
defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend back
backend back
    server app 127.0.0.1:{upstream_port} {send_proxy}
""")
    log_path = prefix / "haproxy.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([HAPROXY, "-db", "-f", str(conf)], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    haproxy = HAProxy(proc, port, log_path)
    _wait_listening("haproxy", proc, port, lambda: haproxy.log, haproxy.stop)
    return haproxy


# -- a differential pair ----------------------------------------------------

@dataclass
class Pair:
    """forkserve and the reference server on the same app, each also behind
    its own nginx."""

    forkserve: Backend
    reference: Backend
    proxies: dict[str, Nginx]
    # forkserve's workers once serving: no request may take one down.
    forkserve_workers: list[int] = field(default_factory=list)

    def targets(self, via: str) -> list[tuple[str, str, int]]:
        """(name, host, port) of both servers, ``direct`` or through ``nginx``."""
        if via == "direct":
            return [(b.name, "127.0.0.1", b.port) for b in (self.forkserve, self.reference)]
        if not self.proxies:
            pytest.skip("nginx is not installed (Debian package nginx-light)")
        return [(name, "127.0.0.1", self.proxies[name].port)
                for name in (self.forkserve.name, self.reference.name)]


@contextlib.contextmanager
def differential(tmp: Path, app: str, kind: str, *, cwd: Path = FRAMEWORKS,
                 env: dict[str, str] | None = None, ready_path: str = "/",
                 forkserve_args: tuple[str, ...] = (), reference_args: tuple[str, ...] = (),
                 reference_app: str | None = None) -> Iterator[Pair]:
    """Serve ``app`` (``kind`` ``wsgi`` or ``asgi``) under forkserve and the
    reference server, each behind an nginx; stop every process at the end."""
    started: list = []
    try:
        ref_name = "gunicorn" if kind == "wsgi" else "uvicorn"
        backends = []
        for name, server, args, served in (
                ("forkserve", "forkserve", forkserve_args, app),
                (ref_name, "reference", reference_args, reference_app or app)):
            port = free_port()
            backend = spawn(name, server_command(server, served, port, kind, *args), port,
                            tmp / f"{name}.log", cwd, env)
            started.append(backend)
            backends.append(backend)
        proxies = {}
        if nginx_available():
            for backend in backends:
                port = free_port()
                proxies[backend.name] = start_nginx(
                    tmp / f"nginx-{backend.name}", proxy_site(f"127.0.0.1:{backend.port}", port),
                    port)
                started.append(proxies[backend.name])
        for backend in backends:
            wait_serving(backend, ready_path)
        yield Pair(backends[0], backends[1], proxies, backends[0].workers())
    finally:
        for proc in reversed(started):
            proc.stop()

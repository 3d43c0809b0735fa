"""A multi-host test bed on one machine: network namespaces on a bridge.

Each "host" is a network namespace with one veth link to a private bridge
and its own address in a random 10.213.N.0/24 (the bridge itself has no
address, so nothing is routed through the machine's own namespace and two
beds, even on the same subnet, cannot see each other).  App hosts run their
own forkserve master (``ip netns exec NS python -m forkserve``, PYTHONPATH
the repository), the balancer host runs HAProxy (the shipped
conf/haproxy.cfg with the bed's addresses) or nginx (the shipped
conf/nginx.conf's upstream and proxy settings), and the client host runs
tests/loadgen.py, which counts every request::

    with NetBed(tmp_path, kind="sync") as bed:
        bed.start_apps(3)
        bed.start_haproxy()
        with bed.load() as load:
            bed.hup(bed.apps[0])
        print(load.result)

Everything the bed makes is undone when the ``with`` ends, also on failure,
and at interpreter exit if it never did: processes by PID (TERM, then KILL),
then the namespaces and links.  :func:`netns_unavailable` says why a bed
cannot be made here (not root, ``ip netns`` refused), for a skip.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil

from conftest import ROOT, wait_for
from loadgen import LoadResult

APPS = Path(__file__).parent / "apps"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
APP_PORT = 8000
#: forkserve's control listener (metrics_bind): /readyz for the balancer's checks.
CONTROL_PORT = 9191
FRONT_PORT = 80
#: forkserve's settings on every app host: the balancer configs are checked
#: against these (keepalive above the balancers' idle upstream timeout).
KEEPALIVE = 5.0
GRACEFUL_TIMEOUT = 10.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20,
                          check=check, stdin=subprocess.DEVNULL)


def netns_unavailable() -> str | None:
    """Why a bed cannot be made here, or None if it can."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (ip netns add)"
    name = f"fsprobe{secrets.token_hex(3)}"
    probe = _ip("netns", "add", name, check=False)
    if probe.returncode != 0:
        return f"ip netns add is not permitted here: {probe.stderr.strip()}"
    _ip("netns", "del", name, check=False)
    return None


@dataclass
class Host:
    """One namespace with its address on the bed's bridge."""

    name: str
    ns: str
    addr: str
    link: str  # the veth end on the bridge, in the machine's namespace


@dataclass
class AppHost(Host):
    """A host running a forkserve master."""

    appdir: Path = Path()
    proc: subprocess.Popen | None = None
    master: int = 0  # the serving master (changes with a USR2 handover)
    log: Path = Path()

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def workers(self, master: int | None = None) -> list[int]:
        try:
            return sorted(c.pid for c in psutil.Process(master or self.master).children()
                          if c.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return []


@dataclass
class Change:
    """What happened during one scenario: the load's counts and the window."""

    result: LoadResult
    started: float = 0.0  # wall clock: the first change
    ended: float = 0.0  # wall clock: the last change settled

    @property
    def p99_ms(self) -> float:
        return 1000 * self.result.percentile(0.99, self.started, self.ended)


class RemoteLoad:
    """tests/loadgen.py running on the client host against the balancer;
    :meth:`stop` ends it and reads its result."""

    def __init__(self, bed: "NetBed", keepalive: int, fresh: int, post_every: int) -> None:
        self.bed = bed
        self.proc = bed.spawn(bed.client, [sys.executable, str(Path(__file__).parent / "loadgen.py"),
                                           bed.balancer.addr, str(FRONT_PORT), "/", str(keepalive),
                                           str(fresh), str(post_every)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=bed.workdir / "loadgen.err")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError("loadgen did not start: "
                                 + (bed.workdir / "loadgen.err").read_text()[-2000:])
        self.started = json.loads(line)["started"]
        self.result: LoadResult | None = None

    def stop(self) -> LoadResult:
        if self.result is None:
            self.proc.stdin.close()
            out = self.proc.stdout.read()
            self.proc.wait(30)
            self.result = LoadResult.from_json(json.loads(out))
        return self.result


class NetBed:
    """Namespaces, links and processes of one test bed; see the module doc."""

    def __init__(self, workdir: Path, kind: str = "sync", workers: int = 2) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kind = kind
        self.workers = workers
        self.tag = secrets.token_hex(3)
        self.net = f"10.213.{secrets.randbelow(256)}"
        self.bridge = f"fsb{self.tag}"
        self.hosts: list[Host] = []
        self.apps: list[AppHost] = []
        self.procs: list[subprocess.Popen] = []
        self.extra_pids: set[int] = set()
        self.balancer: Host | None = None
        self.client: Host | None = None
        self.balancer_proc: subprocess.Popen | None = None
        self.balancer_kind = ""
        self.check_path = "/readyz"
        # drain_delay for the masters started from now on (0: TERM closes
        # the listener at once, as forkserve does by default).
        self.drain_delay = 0.0
        #: False: the balancer never resends a request (to show what
        #: forkserve's drain alone does); the shipped configs resend.
        self.retries = True
        self._next_octet = 11
        self._closed = False

    # -- the network -------------------------------------------------------

    def __enter__(self) -> "NetBed":
        atexit.register(self.close)
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("link", "set", self.bridge, "up")
            self.balancer = self.add_host("lb", octet=2)
            self.client = self.add_host("client", octet=3)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_host(self, name: str, octet: int | None = None) -> Host:
        """A new namespace linked to the bridge, with lo and its address up."""
        if octet is None:
            octet = self._next_octet
            self._next_octet += 1
        host = Host(name, f"fsnb-{self.tag}-{name}", f"{self.net}.{octet}",
                    f"fv{self.tag}{octet}")
        _ip("netns", "add", host.ns)
        self.hosts.append(host)
        _ip("link", "add", host.link, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        _ip("link", "set", host.link, "master", self.bridge, "up")
        _ip("-n", host.ns, "addr", "add", f"{host.addr}/24", "dev", "eth0")
        _ip("-n", host.ns, "link", "set", "eth0", "up")
        _ip("-n", host.ns, "link", "set", "lo", "up")
        return host

    def link_down(self, host: Host) -> None:
        """Cut the host off the bridge (a dead switch port, a pulled cable)."""
        _ip("link", "set", host.link, "down")

    def spawn(self, host: Host, argv: list[str], *, env: dict[str, str] | None = None,
              cwd: Path | None = None, stdin=subprocess.DEVNULL, stdout=None,
              stderr: Path | None = None) -> subprocess.Popen:
        """Run ``argv`` inside ``host`` (``ip netns exec`` execs it: the PID
        is the program's own) and track it for cleanup."""
        err = open(stderr or (self.workdir / f"{host.name}.out"), "ab")
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", host.ns, *argv], env=env,
                                    cwd=str(cwd) if cwd else None, stdin=stdin,
                                    stdout=stdout if stdout is not None else err, stderr=err)
        finally:
            err.close()
        self.procs.append(proc)
        return proc

    # -- app hosts ---------------------------------------------------------

    def start_apps(self, count: int) -> list[AppHost]:
        for _ in range(count):
            self.start_app(self.new_app_host())
        for app in self.apps[-count:]:
            self.wait_ready(app)
        return self.apps[-count:]

    def new_app_host(self) -> AppHost:
        host = self.add_host(f"app{len(self.apps) + 1}")
        appdir = self.workdir / host.name
        appdir.mkdir(exist_ok=True)
        shutil.copy(APPS / "netbed_app.py", appdir / "netbed_app.py")
        app = AppHost(host.name, host.ns, host.addr, host.link, appdir=appdir,
                      log=self.workdir / f"{host.name}-error.log")
        self.hosts[-1] = app
        self.apps.append(app)
        return app

    def start_app(self, app: AppHost, *extra: str) -> None:
        """Start forkserve on ``app`` (a new master; returns at once)."""
        callable_ = "application" if self.kind == "sync" else "app"
        env = {k: v for k, v in os.environ.items()
               if k not in ("FORKSERVE_CMD_ARGS", "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "PORT")}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(app.appdir)])
        env["NETBED_HOST"] = app.name
        app.proc = self.spawn(app, [
            sys.executable, "-m", "forkserve", "-b", f"{app.addr}:{APP_PORT}",
            "-k", self.kind, "-w", str(self.workers), "--keep-alive", str(KEEPALIVE),
            "--graceful-timeout", str(GRACEFUL_TIMEOUT), "--pid", str(app.appdir / "fs.pid"),
            "--error-logfile", str(app.log), "--metrics-bind", f"{app.addr}:{CONTROL_PORT}",
            "--drain-delay", str(self.drain_delay), *extra, f"netbed_app:{callable_}"],
            env=env, cwd=app.appdir)
        app.master = app.proc.pid

    def wait_ready(self, app: AppHost, count: int = 1, timeout: float = 30.0) -> None:
        wait_for(lambda: app.log_text().count("Ready:") >= count or app.proc.poll() is not None,
                 timeout, what=f"forkserve on {app.name} to be ready")
        if app.proc.poll() is not None and app.master == app.proc.pid:
            raise AssertionError(f"forkserve on {app.name} exited:\n{app.log_text()[-3000:]}")

    def deploy(self, app: AppHost, version: str) -> None:
        """Change the app's code on disk (the VERSION it answers with)."""
        path = app.appdir / "netbed_app.py"
        text = path.read_text()
        path.write_text(re.sub(r'^VERSION = ".*"$', f'VERSION = "{version}"', text, flags=re.M))

    def hup(self, app: AppHost, timeout: float = 30.0) -> None:
        """HUP the master; return once the old generation has gone."""
        old = set(app.workers())
        os.kill(app.master, signal.SIGHUP)
        wait_for(lambda: not (set(app.workers()) & old) and len(app.workers()) == self.workers,
                 timeout, what=f"{app.name}'s old workers to go")

    def usr2(self, app: AppHost, timeout: float = 30.0) -> None:
        """USR2 handover: a new master (a child of the old one) takes the
        sockets; once it serves, TERM the old master and wait for it."""
        old = app.master
        before = app.log_text().count("Ready:")
        os.kill(old, signal.SIGUSR2)

        def new_master():
            for child in psutil.Process(old).children():
                with contextlib.suppress(psutil.Error):
                    if any("forkserve: master" in part for part in child.cmdline()):
                        return child.pid
            return None
        new = wait_for(new_master, timeout, what=f"{app.name}'s new master")
        self.extra_pids.add(new)
        wait_for(lambda: app.log_text().count("Ready:") > before
                 and len(app.workers(new)) == self.workers, timeout,
                 what=f"{app.name}'s new master to serve")
        self.extra_pids.update(app.workers(new))
        os.kill(old, signal.SIGTERM)
        if app.proc.pid == old:
            app.proc.wait(timeout)
        else:
            wait_for(lambda: not psutil.pid_exists(old), timeout, what="the old master to stop")
        app.master = new

    def stop_app(self, app: AppHost, timeout: float = 30.0) -> None:
        """TERM the master (a graceful stop) and wait until it has exited."""
        workers = app.workers()
        os.kill(app.master, signal.SIGTERM)
        if app.proc is not None and app.proc.pid == app.master:
            app.proc.wait(timeout)
        else:
            wait_for(lambda: not psutil.pid_exists(app.master), timeout, what="the master to stop")
        wait_for(lambda: not any(psutil.pid_exists(p) for p in workers), timeout,
                 what="the workers to stop")

    def restart(self, app: AppHost) -> None:
        """A full restart: TERM, wait for the exit, start again, wait ready."""
        self.stop_app(app)
        app.log.unlink(missing_ok=True)
        self.start_app(app)
        self.wait_ready(app)

    def kill9(self, app: AppHost) -> None:
        """The host dies: SIGKILL its master and workers at once."""
        pids = [app.master, *app.workers()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- the balancer ------------------------------------------------------

    def haproxy_config(self, apps: list[AppHost] | None = None) -> str:
        """conf/haproxy.cfg with the bed's addresses, files and servers."""
        text = (ROOT / "conf" / "haproxy.cfg").read_text()
        servers = "".join(f"    server {a.name} {a.addr}:{APP_PORT}\n"
                          for a in (self.apps if apps is None else apps))
        text, n = re.subn(r"(?m)^    server .*\n(?:    server .*\n)*", servers, text, count=1)
        assert n == 1, "conf/haproxy.cfg: no server lines"
        replace = {
            "bind :80": f"bind {self.balancer.addr}:{FRONT_PORT}",
            "/run/haproxy/admin.sock": str(self.workdir / "haproxy.sock"),
            "option httpchk GET /readyz\n": f"option httpchk GET {self.check_path}\n",
            "    log /dev/log local0\n": "",
            "    daemon\n": "",
        }
        if self.check_path != "/readyz":
            # Checked on the app port, as without forkserve's control listener.
            replace["default-server check port 9191 "] = "default-server check "
        if not self.retries:
            replace.update({"    retries 3\n": "    retries 0\n", "    option redispatch 1\n": "",
                            "    retry-on conn-failure empty-response\n": "    retry-on none\n"})
        for old, new in replace.items():
            assert old in text, f"conf/haproxy.cfg: {old!r} not found"
            text = text.replace(old, new)
        return text

    def start_haproxy(self, check_path: str = "/readyz") -> None:
        """HAProxy in master-worker mode on the balancer host."""
        self.check_path = check_path
        self.balancer_kind = "haproxy"
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(self.haproxy_config())
        check = subprocess.run([HAPROXY, "-c", "-f", str(cfg)], capture_output=True, text=True,
                               timeout=20)
        assert check.returncode == 0, check.stdout + check.stderr
        self.balancer_proc = self.spawn(self.balancer, [HAPROXY, "-W", "-db", "-f", str(cfg)],
                                        stderr=self.workdir / "haproxy.log")
        self._wait_front()

    def nginx_config(self, apps: list[AppHost] | None = None) -> str:
        """conf/nginx.conf's multi-host upstream and its server block, with
        the bed's addresses, inside a main config of the bed's files."""
        site = (ROOT / "conf" / "nginx.conf").read_text()
        servers = "".join(f"    server {a.addr}:{APP_PORT} max_fails=1 fail_timeout=2s;\n"
                          for a in (self.apps if apps is None else apps))
        site, n = re.subn(r"(?m)(upstream forkserve_hosts \{\n(?:    (?!server ).*\n)*)(?:    server .*\n)+",
                          lambda m: m.group(1) + servers, site, count=1)
        assert n == 1, "conf/nginx.conf: no forkserve_hosts upstream"
        # Only the multi-host upstream is used; the unix-socket one stays as shipped.
        site = site.replace("proxy_pass http://forkserve;", "proxy_pass http://forkserve_hosts;")
        site = site.replace("server unix:/run/forkserve/forkserve.sock",
                            f"server unix:{self.workdir}/unused.sock")
        site = site.replace("listen 80;", f"listen {self.balancer.addr}:{FRONT_PORT};")
        if not self.retries:
            assert "proxy_next_upstream error timeout;" in site
            site = site.replace("proxy_next_upstream error timeout;", "proxy_next_upstream off;")
        prefix = self.workdir / "nginx"
        prefix.mkdir(exist_ok=True)
        return f"""
user root;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
{site}
}}
"""

    def start_nginx(self) -> None:
        self.balancer_kind = "nginx"
        cfg = self.workdir / "nginx.conf"
        cfg.write_text(self.nginx_config())
        self.balancer_proc = self.spawn(self.balancer, [NGINX, "-c", str(cfg), "-p",
                                                        str(self.workdir / "nginx"),
                                                        "-g", "daemon off;"])
        self._wait_front()

    def reload_balancer(self, apps: list[AppHost]) -> None:
        """Point the balancer at ``apps`` and reload it without a restart
        (HAProxy master-worker: USR2; nginx: HUP, what ``nginx -s reload`` sends)."""
        if self.balancer_kind == "haproxy":
            (self.workdir / "haproxy.cfg").write_text(self.haproxy_config(apps))
            self.balancer_proc.send_signal(signal.SIGUSR2)
        else:
            (self.workdir / "nginx.conf").write_text(self.nginx_config(apps))
            self.balancer_proc.send_signal(signal.SIGHUP)

    def haproxy_states(self) -> dict[str, str]:
        """HAProxy's view of each server (UP, DOWN, ...), from its stats socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.workdir / "haproxy.sock"))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        states = {}
        for line in data.decode().splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "forkserve" and cols[1] not in ("BACKEND",):
                states[cols[1]] = cols[17]
        return states

    def _wait_front(self) -> None:
        """Wait until the balancer answers through to an app host."""
        probe = [sys.executable, "-c",
                 "import socket,sys\n"
                 f"s=socket.create_connection(('{self.balancer.addr}',{FRONT_PORT}),2)\n"
                 "s.sendall(b'GET / HTTP/1.1\\r\\nHost: t\\r\\nConnection: close\\r\\n\\r\\n')\n"
                 "sys.exit(0 if s.recv(100).startswith(b'HTTP/1.1 200') else 1)\n"]

        def answers():
            if self.balancer_proc.poll() is not None:
                raise AssertionError(f"{self.balancer_kind} exited:\n" + self.balancer_log())
            return subprocess.run(["ip", "netns", "exec", self.client.ns, *probe],
                                  capture_output=True, timeout=20).returncode == 0
        wait_for(answers, 30, interval=0.2, what=f"{self.balancer_kind} to answer")
        if self.balancer_kind == "haproxy":
            # Every server passed its first check (they start UP, then are checked).
            wait_for(lambda: self.haproxy_states() and
                     all(v == "UP" for v in self.haproxy_states().values()), 30,
                     what="haproxy to see every server UP")

    def balancer_log(self) -> str:
        for path in (self.workdir / "haproxy.log", self.workdir / "nginx" / "error.log"):
            if path.exists():
                return path.read_text(errors="replace")[-4000:]
        return ""

    # -- the client --------------------------------------------------------

    @contextlib.contextmanager
    def load(self, keepalive: int = 4, fresh: int = 2, post_every: int = 2) -> Iterator[Change]:
        """Steady load from the client host while the body runs; the
        yielded Change is filled in when the block ends (window: the block)."""
        load = RemoteLoad(self, keepalive, fresh, post_every)
        change = Change(LoadResult())
        try:
            time.sleep(1.0)  # steady state before the change
            change.started = time.time()
            yield change
            change.ended = time.time()
            time.sleep(1.0)
        finally:
            change.result = load.stop()

    # -- cleanup -----------------------------------------------------------

    def close(self) -> None:
        """Stop every process (by PID), then delete namespaces and links."""
        if self._closed:
            return
        self._closed = True
        pids = set(self.extra_pids)
        for proc in self.procs:
            pids.add(proc.pid)
            with contextlib.suppress(psutil.Error):
                pids.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
        for app in self.apps:
            with contextlib.suppress(psutil.Error):
                pids.add(app.master)
                pids.update(c.pid for c in psutil.Process(app.master).children(recursive=True))
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                p = psutil.Process(pid)
                if p.status() != psutil.STATUS_ZOMBIE:
                    p.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for host in self.hosts:
            _ip("netns", "del", host.ns, check=False)
            _ip("link", "del", host.link, check=False)
        _ip("link", "del", self.bridge, check=False)
        with contextlib.suppress(Exception):
            atexit.unregister(self.close)

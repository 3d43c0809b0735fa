"""systemd integration with the real tools: sd_notify messages read from a
real NOTIFY_SOCKET, socket activation by systemd-socket-activate, and the
unit files checked by systemd-analyze verify."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import APPS, ROOT, free_port, parse_response, stop_tree, wait_for

pytestmark = pytest.mark.e2e


class NotifyListener:
    """A unix datagram socket standing in for systemd's notify socket."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        bind_to = "\0" + address[1:] if address.startswith("@") else address
        self.sock.bind(bind_to)
        self.sock.settimeout(0.2)
        self.address = address
        self.messages: list[dict[str, str]] = []

    def poll(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except (TimeoutError, BlockingIOError):
                return
            self.messages.append(dict(line.split("=", 1) for line in data.decode().splitlines()))

    def wait(self, key: str, value: str | None = None, after: int = 0, timeout: float = 15) -> int:
        """Index of the first message at or after ``after`` with ``key``."""
        def find():
            self.poll()
            for i, msg in enumerate(self.messages[after:], after):
                if key in msg and (value is None or msg[key] == value):
                    return i + 1  # truthy
            return None
        return wait_for(find, timeout, what=f"{key} from forkserve") - 1


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_sd_notify_ready_reloading_stopping(forkserve, tmp_path, abstract):
    address = f"@forkserve-test-{os.getpid()}-{time.monotonic_ns()}" if abstract \
        else str(tmp_path / "notify.sock")
    listener = NotifyListener(address)
    server = forkserve("wsgi_basic:application", "-w", "2", env={"NOTIFY_SOCKET": address})
    ready = listener.wait("READY", "1")
    assert "2 workers" in listener.messages[ready]["STATUS"]
    server.signal(signal.SIGHUP)
    reloading = listener.wait("RELOADING", "1", after=ready + 1)
    usec = int(listener.messages[reloading]["MONOTONIC_USEC"])
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 30
    listener.wait("READY", "1", after=reloading + 1)
    server.signal(signal.SIGTERM)
    listener.wait("STOPPING", "1", after=reloading + 1)
    assert server.wait_exit(15) == 0


def _activate(tmp_path, listen: str, *args: str) -> subprocess.Popen:
    tool = shutil.which("systemd-socket-activate")
    if tool is None:
        pytest.skip("systemd-socket-activate is not installed (Debian package systemd)")
    pythonpath = os.pathsep.join([str(ROOT), str(APPS)])
    env = dict(os.environ, PYTHONPATH=pythonpath)
    log = open(tmp_path / "activate.log", "wb")
    # The tool hands the server only the variables named with -E: without
    # PYTHONPATH, forkserve would have to be installed in this interpreter.
    return subprocess.Popen([tool, "-l", listen, "-E", f"PYTHONPATH={pythonpath}",
                             sys.executable, "-m", "forkserve", *args],
                            cwd=str(APPS), env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def _connect_retry(make, timeout=10.0):
    return wait_for(lambda: _try(make), timeout, what="a connection")


def _try(make):
    try:
        return make()
    except OSError:
        return None


def test_socket_activation_tcp_keeps_early_connections(tmp_path):
    port = free_port()
    # systemd-socket-activate binds first and starts forkserve only when the
    # first connection arrives: that connection waits in the queue meanwhile
    # and must be served, not lost.
    proc = _activate(tmp_path, f"127.0.0.1:{port}", "-w", "2", "wsgi_basic:application")
    try:
        early = _connect_retry(lambda: socket.create_connection(("127.0.0.1", port), timeout=15))
        with early:
            early.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := early.recv(65536):
                data += chunk
        assert parse_response(data)[:1] == (200,)
        assert parse_response(data)[2] == b"hello"
        log = (tmp_path / "activate.log").read_text()
        assert f"Listening at: 127.0.0.1:{port}" in log
    finally:
        stop_tree(proc)


def test_socket_activation_unix(tmp_path):
    path = str(tmp_path / "act.sock")
    proc = _activate(tmp_path, path, "-w", "1", "wsgi_basic:application")
    try:
        def make():
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(15)
            s.connect(path)
            return s
        with _connect_retry(make) as s:
            s.sendall(b"GET /environ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        status, _, body = parse_response(data)
        assert status == 200
        assert b"REMOTE_ADDR=\n" in body or b"REMOTE_ADDR=" in body
    finally:
        stop_tree(proc)
    # systemd owns the socket file: forkserve must not remove it.
    assert os.path.exists(path)


def test_unit_files_pass_systemd_analyze_verify(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    units = tmp_path / "units"
    units.mkdir()
    service = (ROOT / "systemd" / "forkserve.service").read_text()
    # verify checks that ExecStart's binary exists: point it at this
    # interpreter, everything else as shipped.
    exec_line = [ln for ln in service.splitlines() if ln.startswith("ExecStart=")][0]
    service = service.replace(exec_line, f"ExecStart={sys.executable} -m forkserve "
                                         f"-c /srv/app/conf/prod.py app:application")
    (units / "forkserve.service").write_text(service)
    shutil.copy(ROOT / "systemd" / "forkserve.socket", units / "forkserve.socket")
    proc = subprocess.run([tool, "verify", "--man=no", str(units / "forkserve.socket"),
                           str(units / "forkserve.service")],
                          capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                if "forkserve" in ln and "Failed to" not in ln or "rror" in ln]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not problems, problems


def _unit_settings(name: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in (ROOT / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_unit_files_keep_the_activated_socket_path_across_restarts():
    """systemd removes a service's RuntimeDirectory when the service stops
    unless told to preserve it; the socket unit's file lives there, so a
    restart would leave systemd holding a socket nobody can reach."""
    service = _unit_settings("forkserve.service")
    socket_unit = _unit_settings("forkserve.socket")
    paths = [p for p in socket_unit["ListenStream"] if p.startswith("/")]
    runtime_dirs = [f"/run/{d}/" for v in service.get("RuntimeDirectory", []) for d in v.split()]
    inside = [p for p in paths if any(p.startswith(d) for d in runtime_dirs)]
    if inside:
        # "restart" would not do: after a stop the socket unit stays active.
        assert service.get("RuntimeDirectoryPreserve") == ["yes"], inside
    # And the stop timeout leaves room for conf/prod.py's graceful_timeout.
    namespace: dict = {}
    exec((ROOT / "conf" / "prod.py").read_text(), namespace)
    assert int(service["TimeoutStopSec"][0]) > namespace["graceful_timeout"]


def test_watchdog_pings(forkserve, tmp_path):
    address = str(tmp_path / "wd.sock")
    listener = NotifyListener(address)
    forkserve("wsgi_basic:application", "-w", "1",
              env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    first = listener.wait("WATCHDOG", "1")
    listener.wait("WATCHDOG", "1", after=first + 1, timeout=5)


def test_usr2_handover_reports_the_new_mainpid(forkserve, tmp_path):
    address = str(tmp_path / "h.sock")
    listener = NotifyListener(address)
    server = forkserve("wsgi_basic:application", "-w", "1", env={"NOTIFY_SOCKET": address})
    ready = listener.wait("READY", "1")
    server.signal(signal.SIGUSR2)
    i = listener.wait("MAINPID", after=ready + 1, timeout=20)
    new_pid = int(listener.messages[i]["MAINPID"])
    server.seen_pids.add(new_pid)
    assert new_pid != server.pid
    listener.wait("READY", "1", after=i, timeout=10)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
    # The new master serves alone on the same socket.
    assert server.get("/")[2] == b"hello"
    import psutil
    server.seen_pids.update(c.pid for c in psutil.Process(new_pid).children())
    os.kill(new_pid, signal.SIGTERM)


def test_unix_socket_mode_follows_umask_and_is_removed_on_exit(forkserve):
    server = forkserve("wsgi_basic:application", "-w", "1", "-m", "0o007", unix=True)
    mode = os.stat(server.unix).st_mode & 0o777
    assert mode == 0o660  # the umask's rw bits: x means nothing on a socket
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
    assert not os.path.exists(server.unix)

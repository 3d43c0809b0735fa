"""The arbiter and its signals, against real processes (issue 2)."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import APPS, wait_for

pytestmark = pytest.mark.e2e

APP = "wsgi_basic:application"


def _listen_inode(pid: int, port: int) -> int:
    """Inode of the master's listening socket on ``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            inodes.add(int(fields[9]))
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            return int(target[8:-1])
    raise AssertionError(f"no listening socket on port {port} in process {pid}")


def test_ttin_and_ttou_change_the_worker_count(forkserve):
    server = forkserve(APP, "-w", "2")
    server.wait_workers(2)
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    # One at a time: a second TTOU sent before the first is handled would
    # merge with it (standard signals do not queue).
    server.signal(signal.SIGTTOU)
    server.wait_workers(2)
    server.signal(signal.SIGTTOU)
    server.wait_workers(1)
    # Never fewer than one.
    server.signal(signal.SIGTTOU)
    time.sleep(1.0)
    assert len(server.workers()) == 1
    assert server.get("/")[0] == 200


def test_killed_worker_is_replaced_within_two_seconds(forkserve):
    server = forkserve(APP, "-w", "2")
    victim = server.wait_workers(2)[0]
    os.kill(victim, signal.SIGKILL)
    start = time.monotonic()
    server.wait_workers(2, exclude={victim}, timeout=2)
    assert time.monotonic() - start < 2
    assert f"Worker (pid:{victim}) was sent SIGKILL" in server.log


def test_hup_replaces_workers_keeps_master_and_socket(forkserve):
    server = forkserve(APP, "-w", "2")
    old = set(server.wait_workers(2))
    inode = _listen_inode(server.pid, server.port)
    failures: list[str] = []
    done = threading.Event()
    count = [0]

    def loop():
        while not done.is_set():
            try:
                status, _, _ = server.get("/")
                if status != 200:
                    failures.append(f"status {status}")
                count[0] += 1
            except OSError as exc:
                failures.append(repr(exc))

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        server.signal(signal.SIGHUP)
        server.wait_log("Reload complete", timeout=15)
        new = set(server.wait_workers(2, exclude=old, timeout=15))
        time.sleep(0.3)
    finally:
        done.set()
        for t in threads:
            t.join(10)
    assert not failures, failures[:5]
    assert count[0] > 20
    assert not (new & old)
    assert server.proc.poll() is None
    assert _listen_inode(server.pid, server.port) == inode


def test_term_lets_an_in_flight_request_finish(forkserve):
    server = forkserve(APP, "-w", "1", "--graceful-timeout", "10")
    result = {}
    t = threading.Thread(target=lambda: result.update(response=server.request("GET", "/sleep?2")))
    t.start()
    time.sleep(0.7)  # the request is in the app now, for another 1.3 s
    server.signal(signal.SIGTERM)
    t.join(15)
    assert result["response"][0] == 200
    assert result["response"][2] == b"slept"
    assert server.wait_exit(15) == 0
    # The listener is closed: nobody accepts any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


def test_int_is_a_fast_stop(forkserve):
    server = forkserve(APP, "-w", "2")
    workers = server.workers()
    t = threading.Thread(target=lambda: _ignore(lambda: server.request("GET", "/sleep?20")))
    t.start()
    time.sleep(0.5)
    start = time.monotonic()
    server.signal(signal.SIGINT)
    server.wait_exit(10)
    assert time.monotonic() - start < 5
    t.join(5)
    wait_for(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                             for p in workers), 5, what="workers to exit")


def _ignore(fn):
    try:
        fn()
    except Exception:
        pass


def test_stuck_request_is_killed_at_timeout(forkserve):
    server = forkserve(APP, "-w", "1", "-t", "2")
    old = server.workers()[0]
    start = time.monotonic()
    raw = b""
    try:
        raw = server.raw(b"GET /sleep?60 HTTP/1.1\r\nHost: t\r\n\r\n", timeout=20)
    except ConnectionResetError:
        pass
    elapsed = time.monotonic() - start
    assert raw == b""
    assert 1.5 < elapsed < 10
    server.wait_log("WORKER TIMEOUT", timeout=5)
    line = [ln for ln in server.log.splitlines() if "WORKER TIMEOUT" in ln][0]
    assert f"pid:{old}" in line and "GET /sleep?60 HTTP/1.1" in line
    server.wait_workers(1, exclude={old}, timeout=5)
    assert server.get("/")[0] == 200


def test_max_requests_recycles_workers(forkserve):
    server = forkserve(APP, "-w", "1", "--max-requests", "5", "--max-requests-jitter", "2")
    first = server.workers()[0]
    pids = set()
    for _ in range(20):
        status, _, body = server.get("/pid")
        assert status == 200
        pids.add(int(body))
    assert len(pids) >= 2 and first in pids
    assert "Autorestarting worker" in server.log


def test_usr1_reopens_log_files(forkserve, tmp_path):
    access = tmp_path / "access.log"
    server = forkserve(APP, "-w", "1", "--access-logfile", str(access))
    server.get("/")
    wait_for(lambda: access.exists() and "GET / " in access.read_text(), 5, what="access line")
    access.rename(tmp_path / "access.log.1")
    server.signal(signal.SIGUSR1)
    server.wait_log("Handling signal: usr1")
    time.sleep(0.5)
    server.get("/pid")
    wait_for(lambda: access.exists() and "GET /pid" in access.read_text(), 5,
             what="the reopened access log")
    assert "GET /pid" not in (tmp_path / "access.log.1").read_text()


def test_winch_stops_workers_and_keeps_the_master(forkserve):
    server = forkserve(APP, "-w", "2")
    server.wait_workers(2)
    server.signal(signal.SIGWINCH)
    server.wait_workers(0)
    assert server.proc.poll() is None
    server.signal(signal.SIGHUP)
    server.wait_workers(2)
    assert server.get("/")[0] == 200


def test_process_titles(forkserve):
    server = forkserve(APP, "-w", "1", "-n", "shop")
    worker = server.workers()[0]
    assert " ".join(psutil.Process(server.pid).cmdline()).startswith("forkserve: master [shop]")
    assert " ".join(psutil.Process(worker).cmdline()).startswith("forkserve: worker [shop]")


def test_access_log_atoms(forkserve, tmp_path):
    access = tmp_path / "access.log"
    fmt = '%(h)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(D)s %(M)s %({x-trace}i)s %({content-type}o)s %(m)s %(U)s %(q)s'
    server = forkserve(APP, "-w", "1", "--access-logfile", str(access), "--access-logformat", fmt)
    server.request("GET", "/pid?x=1", headers={"Referer": "http://ref/", "User-Agent": "ua/1",
                                               "X-Trace": "abc"})
    line = wait_for(lambda: access.exists() and access.read_text().strip(), 5, what="access line")
    parts = line.split(" ")
    assert parts[0] == "127.0.0.1"
    assert '"GET /pid?x=1 HTTP/1.1" 200' in line
    assert '"http://ref/" "ua/1"' in line
    assert line.endswith("abc text/plain GET /pid x=1")
    d, m = int(parts[-7]), int(parts[-6])
    assert d >= 0 and m == d // 1000


def test_app_that_fails_to_import_exits_3(forkserve):
    server = forkserve("broken_import:application", "-w", "4", wait=False)
    assert server.wait_exit(20) == 3
    log = server.log
    assert "this_module_does_not_exist" in log
    assert "Worker failed to boot" in log
    assert log.count("failed to boot:") <= 4


def test_hooks_are_called(forkserve, tmp_path):
    hook_log = tmp_path / "hooks.log"
    server = forkserve(APP, "-c", str(APPS / "hooks_conf.py"), env={"FS_HOOK_LOG": str(hook_log)})
    server.get("/")
    server.signal(signal.SIGTTIN)
    server.wait_workers(3)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete", timeout=15)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == 0
    names = [line.split(" ")[0] for line in hook_log.read_text().splitlines()]
    for hook in ("on_starting", "when_ready", "pre_fork", "post_fork", "post_worker_init",
                 "pre_request", "post_request", "child_exit", "worker_exit",
                 "nworkers_changed", "on_reload", "on_exit"):
        assert hook in names, (hook, names)
    assert "nworkers_changed 2->3" in hook_log.read_text()
    assert names[0] == "on_starting" and names[-1] == "on_exit"


def test_request_waiting_while_the_worker_was_busy_is_served(forkserve):
    # One worker, one thread.  A client connects (accepted, nothing sent
    # yet); another's request keeps the worker in the app for 3 s; the first
    # client sends its request meanwhile, and it waits unread in the kernel
    # past header_timeout (1 s).  That client did nothing wrong: it must be
    # served, not dropped as idle.
    server = forkserve(APP, "-w", "1", "--header-timeout", "1")
    early = server.connect()
    time.sleep(0.3)
    slow = threading.Thread(target=lambda: server.request("GET", "/sleep?3"))
    slow.start()
    time.sleep(0.5)
    early.sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := early.recv(65536):
        data += chunk
    early.close()
    slow.join(10)
    assert data.startswith(b"HTTP/1.1 200"), data

"""Resilience under faults (issue 5): reloads under load, crashes, leaks,
a dead master, descriptor exhaustion.  Every request is counted; see
tests/loadgen.py for what counts as a failure."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from conftest import APPS, stop_handed_over_master, wait_for
from loadgen import Load

pytestmark = pytest.mark.e2e


def _report(name: str, result) -> None:
    # Shown with -s and kept in the junit output; the closing notes quote it.
    print(f"\n[chaos] {name}: {result}")


def _copy_app(tmp_path: Path, version: str, kind: str = "sync") -> Path:
    src = (APPS / ("wsgi_chaos.py" if kind == "sync" else "asgi_chaos.py")).read_text()
    target = tmp_path / "chaos_live.py"
    target.write_text(src.replace('"v1"', repr(version)))
    return target


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_hup_20_times_under_load_loses_nothing(forkserve, tmp_path, kind):
    _copy_app(tmp_path, "v1", kind)
    app = "chaos_live:application" if kind == "sync" else "chaos_live:app"
    server = forkserve(app, "-k", kind, "-w", "2", "--graceful-timeout", "15",
                       "--keep-alive", "5", cwd=tmp_path,
                       env={"PYTHONDONTWRITEBYTECODE": "1"})
    master = server.pid
    with Load(server.connect, "/version", keepalive=3, fresh=3,
              slow_path="/sleep?5", slow=2) as load:
        time.sleep(0.5)
        for i in range(20):
            if i == 19:
                _copy_app(tmp_path, "v2-deployed", kind)
            before = server.log.count("Reload complete")
            server.signal(signal.SIGHUP)
            wait_for(lambda: server.log.count("Reload complete") > before, 20,
                     what=f"reload {i + 1}")
            time.sleep(0.3)
        time.sleep(1.0)
        result = load.stop()
    _report(f"HUP x20 under load ({kind})", result)
    assert server.proc.poll() is None and server.pid == master
    assert result.failed == 0, f"{result} {result.failures}\n{server.log[-3000:]}"
    assert result.ok > 200
    # The new code is what is served now.
    status, _, body = server.get("/version")
    assert (status, body) == (200, b"v2-deployed")
    assert "Reload failed" not in server.log


def test_hup_with_broken_app_keeps_old_workers(forkserve, tmp_path):
    _copy_app(tmp_path, "v1")
    server = forkserve("chaos_live:application", "-w", "2", cwd=tmp_path,
                       env={"PYTHONDONTWRITEBYTECODE": "1"})
    old = set(server.wait_workers(2))
    (tmp_path / "chaos_live.py").write_text("this is not python (\n")
    server.signal(signal.SIGHUP)
    server.wait_log("Reload failed", timeout=20)
    assert set(server.workers()) == old
    assert server.get("/version")[2] == b"v1"
    assert server.proc.poll() is None


def test_usr2_handover_under_load(forkserve, tmp_path):
    pidfile = tmp_path / "fs.pid"
    server = forkserve("wsgi_chaos:application", "-w", "2", "-p", str(pidfile))
    old_master = server.pid
    wait_for(lambda: pidfile.exists(), 5, what="pidfile")
    with Load(server.connect, "/pid", keepalive=2, fresh=2) as load:
        time.sleep(0.5)
        server.signal(signal.SIGUSR2)

        def new_master():
            for child in psutil.Process(old_master).children():
                try:
                    if "master" in " ".join(child.cmdline()) or child.name() == "python":
                        if any("forkserve: master" in part for part in child.cmdline()):
                            return child.pid
                except psutil.Error:
                    pass
            return None

        new_pid = wait_for(new_master, 20, what="the re-executed master")
        server.seen_pids.add(new_pid)
        wait_for(lambda: len(psutil.Process(new_pid).children()) >= 2, 20, what="new workers")
        server.wait_log("Ready:", count=2, timeout=20)
        assert (tmp_path / "fs.pid.oldbin").read_text().strip() == str(old_master)
        wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() == str(new_pid), 10,
                 what="the new pidfile")
        server.signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
        time.sleep(1.0)
        result = load.stop()
    try:
        _report("USR2 handover under load", result)
        assert result.failed == 0, f"{result}\n{server.log[-3000:]}"
        # The new master serves alone now.
        status, _, body = server.get("/pid")
        assert status == 200
        assert int(body) in {c.pid for c in psutil.Process(new_pid).children()}
    finally:
        stop_handed_over_master(server, new_pid)


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_kill_9_of_a_busy_worker_loses_only_its_request(forkserve, kind):
    app = "wsgi_chaos:application" if kind == "sync" else "asgi_chaos:app"
    server = forkserve(app, "-k", kind, "-w", "2")
    with Load(server.connect, "/version", keepalive=2, fresh=2) as load:
        time.sleep(0.5)
        victim = server.workers()[0]
        os.kill(victim, signal.SIGKILL)
        server.wait_workers(2, exclude={victim}, timeout=5)
        time.sleep(0.5)
        result = load.stop()
    _report(f"kill -9 of a busy worker ({kind})", result)
    # Only what that worker had in flight may fail: one request for sync;
    # for asgi, the requests in progress on its connections (at most the
    # four clients of this load).
    assert result.failed <= (1 if kind == "sync" else 4), result
    assert "was sent SIGKILL" in server.log


def test_segfaulting_request_is_logged_and_worker_respawned(forkserve):
    server = forkserve("wsgi_chaos:application", "-w", "1")
    old = server.workers()
    try:
        raw = server.raw(b"GET /segv HTTP/1.1\r\nHost: t\r\n\r\n", timeout=10)
    except ConnectionResetError:
        raw = b""
    assert raw == b""
    server.wait_log("SIGSEGV", timeout=5)
    new = server.wait_workers(1, exclude=set(old), timeout=5)
    assert server.get("/pid")[2] == str(new[0]).encode()


def test_failing_post_fork_hook_stops_master_with_status_3(forkserve, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("def post_fork(server, worker):\n    raise RuntimeError('no database')\n")
    server = forkserve("wsgi_chaos:application", "-w", "3", "-c", str(conf), wait=False)
    assert server.wait_exit(20) == 3
    log = server.log
    assert "no database" in log
    assert "Worker failed to boot" in log
    # No restart storm: at most the first batch of workers was forked.
    assert log.count("failed to boot:") <= 3


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_master_kill_9_leaves_no_worker(forkserve, kind):
    app = "wsgi_chaos:application" if kind == "sync" else "asgi_chaos:app"
    server = forkserve(app, "-k", kind, "-w", "2")
    workers = server.workers()
    os.kill(server.pid, signal.SIGKILL)
    server.proc.wait(5)

    def gone():
        return all(not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
                   for p in workers)
    wait_for(gone, 5, what="orphaned workers to exit")
    # And the port is free for the next server.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", server.port))


def test_memory_recycling_with_a_leaking_app(forkserve):
    server = forkserve("wsgi_chaos:application", "-w", "1", "--max-worker-memory", "120")
    first = server.workers()[0]
    hoards = []
    for _ in range(6):
        status, _, body = server.get("/leak")
        assert status == 200
        hoards.append(int(body))
        # One client, one request at a time (see test_supervision.py for
        # the limit under concurrent load).
        time.sleep(0.2)
    server.wait_log("max_worker_memory", timeout=10)
    server.wait_workers(1, exclude={first}, timeout=10)
    # 30 MB a request: the first worker went over 120 MiB after its third or
    # fourth, and a fresh worker (a fresh hoard) served the next.
    assert hoards[0] == 1 and 1 in hoards[1:], hoards
    assert max(hoards) <= 4, hoards


def test_lifetime_recycling(forkserve):
    server = forkserve("wsgi_chaos:application", "-w", "1", "--max-worker-lifetime", "2")
    first = server.workers()[0]
    server.wait_log("max_worker_lifetime", timeout=10)
    server.wait_workers(1, exclude={first}, timeout=10)
    assert server.get("/")[0] == 200


def test_emfile_backs_off_and_recovers(forkserve):
    server = forkserve("wsgi_chaos:application", "-w", "1", "--keep-alive", "30",
                       "--header-timeout", "30")
    worker = server.workers()[0]
    # Lower the running worker's descriptor limit (prlimit(2)), as a busy
    # host with a low ulimit -n would.
    psutil.Process(worker).rlimit(psutil.RLIMIT_NOFILE, (40, 40))
    held = []
    try:
        for _ in range(60):
            held.append(server.connect(5))
        server.wait_log("pausing accepts", timeout=10)
        # An already accepted connection is still served.
        held[0].sendall(b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n")
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        # Backing off, not spinning on a listener that stays readable.
        assert psutil.Process(worker).cpu_percent(1.0) < 50
    finally:
        for s in held:
            s.close()
    # Descriptors are free again: new clients are served by the same worker.
    assert server.get("/pid")[2] == str(worker).encode()


def test_preload_hup_reloads_the_app_in_the_master(forkserve, tmp_path):
    _copy_app(tmp_path, "v1")
    server = forkserve("chaos_live:application", "-w", "2", "--preload", cwd=tmp_path,
                       env={"PYTHONDONTWRITEBYTECODE": "1"})
    assert server.get("/version")[2] == b"v1"
    v1 = set(server.workers())
    _copy_app(tmp_path, "v2-preloaded")
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete", timeout=20)
    server.wait_workers(2, exclude=v1, timeout=15)  # v1's workers drained
    assert server.get("/version")[2] == b"v2-preloaded"
    # A broken app on HUP keeps the old one serving.
    (tmp_path / "chaos_live.py").write_text("raise ImportError('half-deployed')\n")
    server.signal(signal.SIGHUP)
    server.wait_log("Reload failed", timeout=20)
    assert server.get("/version")[2] == b"v2-preloaded"


def test_unread_stdout_pipe_does_not_block_workers(tmp_path):
    """Access log to a stdout pipe nobody reads: requests keep flowing."""
    import subprocess
    import sys

    from conftest import ROOT, free_port, stop_tree
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(APPS)]))
    proc = subprocess.Popen([sys.executable, "-m", "forkserve", "-w", "1", "-b", f"127.0.0.1:{port}",
                             "--access-logfile", "-", "--error-logfile", str(tmp_path / "err.log"),
                             "wsgi_chaos:application"], cwd=str(APPS), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: "Ready:" in (tmp_path / "err.log").read_text()
                 if (tmp_path / "err.log").exists() else False, 15, what="ready")
        # A pipe holds 64 KiB; 3,000 access lines are far more than that.
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for _ in range(3000):
                s.sendall(b"GET /version HTTP/1.1\r\nHost: t\r\n\r\n")
                assert s.recv(4096).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - start < 30
    finally:
        stop_tree(proc)

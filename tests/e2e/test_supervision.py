"""The master and the worker life cycle under faults (issue 12): crashing
requests, signals at awkward moments (boot, reload, drain), leaking apps.

The numbers the README and the closing notes quote are printed (run with
-s); every test asserts its bound."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import APPS, parse_response, stop_handed_over_master, wait_for

pytestmark = pytest.mark.e2e

APP = {"sync": "supervision_app:application", "asgi": "supervision_app:app"}


def _report(name: str, text: str) -> None:
    print(f"\n[supervision] {name}: {text}")


def _get(server, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body)."""
    status, _, body = parse_response(server.raw(
        f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), timeout))
    return status, body


class Prober:
    """Clients sending ``path`` in a loop on fresh connections, recording
    each request's latency and whether it was answered with a 200."""

    def __init__(self, server, path: str, clients: int = 1, timeout: float = 10.0) -> None:
        self.server = server
        self.path = path
        self.timeout = timeout
        self.results: list[tuple[float, float, bool]] = []  # (start, latency, ok)
        self.errors: list[str] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(clients)]

    def __enter__(self) -> "Prober":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        for t in self.threads:
            t.join(self.timeout + 5)

    def _loop(self) -> None:
        while not self.done.is_set():
            start = time.monotonic()
            try:
                status, _ = _get(self.server, self.path, self.timeout)
                ok = status == 200
                if not ok:
                    self.errors.append(f"status {status}")
            except (OSError, AssertionError) as exc:
                ok = False
                self.errors.append(repr(exc))
            self.results.append((start, time.monotonic() - start, ok))
            self.done.wait(0.005)  # a steady client, not a flood

    @property
    def answered(self) -> int:
        return sum(1 for r in self.results if r[2])

    def unavailable(self, slow: float = 0.5) -> float:
        """Seconds spent in requests that took longer than ``slow`` or failed."""
        return sum(lat for _, lat, ok in self.results if lat > slow or not ok)


# -- crashes ---------------------------------------------------------------

@pytest.mark.parametrize("kind, workers", [("sync", 1), ("asgi", 1), ("sync", 3)])
def test_a_crashing_request_does_not_take_the_server_down(forkserve, kind, workers):
    """A request that segfaults its worker every 2 s: the worker was serving,
    so it is replaced at once (no back-off), and a client looping on another
    route is answered throughout."""
    server = forkserve(APP[kind], "-k", kind, "-w", str(workers))
    crashes = 8
    with Prober(server, "/version") as probe:
        for _ in range(crashes):
            time.sleep(2.0)
            try:
                server.raw(b"GET /segv HTTP/1.1\r\nHost: t\r\n\r\n", timeout=10)
            except OSError:
                pass
        time.sleep(1.0)
    total = len(probe.results)
    worst = max(lat for _, lat, _ in probe.results)
    _report(f"segfault every 2 s, {kind} -w {workers}",
            f"{probe.answered}/{total} answered, unavailable {probe.unavailable():.2f}s, "
            f"worst latency {worst:.2f}s, errors {probe.errors[:3]}")
    log = server.log
    assert log.count("was killed by SIGSEGV on 'GET /segv HTTP/1.1'") == crashes, log[-3000:]
    assert "next spawn in" not in log and "keep crashing" not in log
    # Only a request the dying worker had already accepted may be lost.
    assert total - probe.answered <= crashes, probe.errors
    assert probe.answered > 50
    assert worst < 3.0
    assert probe.unavailable() < 4.0
    assert len(server.workers()) == workers


def test_a_worker_crashing_before_ready_is_respawned_with_back_off(forkserve, tmp_path):
    """An app whose import kills its worker: back-off, not a fork storm."""
    (tmp_path / "segv_on_import.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    server = forkserve("segv_on_import:application", "-w", "2", cwd=tmp_path, wait=False)
    time.sleep(4.0)
    spawned = server.log.count("died before it was ready")
    assert 2 <= spawned <= 12, server.log[-3000:]
    assert "killed by SIGSEGV while booting" in server.log
    assert server.proc.poll() is None


# -- TERM at awkward moments -------------------------------------------------

def _blocked_signals(pid: int) -> int:
    """The mask of signals ``pid`` blocks (SigBlk in /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigBlk:"):
            return int(line.split()[1], 16)
    raise AssertionError(f"no SigBlk for {pid}")


def test_master_and_workers_block_no_signal(forkserve):
    """The master blocks its signals only across fork; a worker unblocks
    them once its handlers are in place.  None may stay blocked."""
    server = forkserve(APP["sync"], "-w", "2")
    server.signal(signal.SIGTTIN)
    pids = server.wait_workers(3)
    for pid in [server.pid, *pids]:
        assert _blocked_signals(pid) == 0, pid


def _slow_import(tmp_path: Path, seconds: float) -> dict[str, str]:
    flag = tmp_path / "slow-import"
    flag.write_text(str(seconds))
    return {"FS_SLOW_IMPORT": str(flag)}


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_term_while_the_worker_imports_the_app(forkserve, tmp_path, kind):
    """The worker imports for 5 s; TERM then must not wait for
    graceful_timeout (30 s): nothing to drain before READY."""
    env = _slow_import(tmp_path, 5)
    server = forkserve(APP[kind], "-k", kind, "-w", "2", env=env, wait=False)
    wait_for(lambda: len(server.workers()) == 2, 10, what="workers forked")
    workers = server.workers()
    time.sleep(0.5)
    start = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    elapsed = time.monotonic() - start
    _report(f"TERM while importing ({kind})", f"master exited {elapsed:.2f}s after TERM")
    assert elapsed < 4.0, server.log
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in workers)
    assert "did not stop within graceful_timeout" not in server.log


def test_term_during_the_lifespan_startup(forkserve):
    """The ASGI app's lifespan startup takes 15 s; a TERM 1 s into it
    cancels it: before READY there is nothing to drain.  (It used to wait
    for the startup to finish, then drain.)"""
    server = forkserve(APP["asgi"], "-k", "asgi", "-w", "2", "--graceful-timeout", "20",
                       env={"FS_SLOW_STARTUP": "15"}, wait=False)
    server.wait_log("Booting worker", count=2)
    workers = server.workers()
    time.sleep(1.0)
    start = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    elapsed = time.monotonic() - start
    _report("TERM during the lifespan startup", f"master exited {elapsed:.2f}s after TERM")
    assert elapsed < 4.0, server.log
    assert "Worker exiting" in server.log
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in workers)
    assert "did not stop within graceful_timeout" not in server.log
    assert "Traceback" not in server.log


@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_term_as_a_worker_starts_serving(forkserve, tmp_path, kind):
    """A TERM in the moment between a worker's boot and its serving loop
    taking over (widened to 3 s by a config file) is not lost: the ASGI
    worker used to hand SIGTERM to its event loop there, and a TERM before
    the loop ran stayed recorded in the loop and was never acted on, so the
    master waited out graceful_timeout."""
    marker = tmp_path / "serving"
    server = forkserve(APP[kind], "-k", kind, "-w", "2", "--graceful-timeout", "15",
                       "-c", str(APPS / "serve_start_delay_conf.py"), wait=False,
                       env={"FS_SERVE_MARKER": str(marker), "FS_SERVE_DELAY": "3"})
    wait_for(lambda: marker.exists() and len(marker.read_text().split()) == 2, 15,
             what="both workers about to serve")
    time.sleep(0.2)
    start = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    elapsed = time.monotonic() - start
    _report(f"TERM as the workers start serving ({kind})", f"master exited {elapsed:.2f}s after TERM")
    # The 3 s delay runs out, then the worker stops at once.
    assert elapsed < 6.0, server.log
    assert "did not stop within graceful_timeout" not in server.log


def test_term_right_after_a_hup(forkserve, tmp_path):
    flag = tmp_path / "slow-import"
    server = forkserve(APP["sync"], "-w", "2", env={"FS_SLOW_IMPORT": str(flag)})
    # From now on the app imports for 5 s: the new generation is booting
    # when TERM comes.
    flag.write_text("5")
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(server.workers()) == 4, 10, what="the new generation forked")
    time.sleep(0.3)
    start = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    elapsed = time.monotonic() - start
    _report("TERM right after HUP", f"master exited {elapsed:.2f}s after TERM")
    assert elapsed < 4.0, server.log
    assert "did not stop within graceful_timeout" not in server.log


def test_int_during_a_graceful_stop_makes_it_fast(forkserve):
    server = forkserve(APP["sync"], "-w", "1", "--graceful-timeout", "30")
    t = threading.Thread(target=lambda: _quietly(lambda: _get(server, "/sleep?20", 30)))
    t.start()
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    server.wait_log("Handling signal: term")
    time.sleep(0.5)
    assert server.proc.poll() is None  # draining the 20 s request
    start = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait_exit(15) == 0
    assert time.monotonic() - start < 3.0
    assert "Fast stop asked for during the graceful stop" in server.log
    t.join(15)


def _quietly(fn):
    try:
        fn()
    except Exception:
        pass


# -- reloads -------------------------------------------------------------------

def _deploy(tmp_path: Path, version: str, import_seconds: float = 0.0) -> None:
    """Write the app as ``live_app.py`` in ``tmp_path``: VERSION changed,
    and an import that takes ``import_seconds``."""
    src = (APPS / "supervision_app.py").read_text().replace('VERSION = "v1"',
                                                             f"VERSION = {version!r}")
    if import_seconds:
        src += f"\ntime.sleep({import_seconds})\n"
    target = tmp_path / "live_app.py"
    tmp = tmp_path / "live_app.py.tmp"
    tmp.write_text(src)
    tmp.replace(target)


def _live(tmp_path: Path, forkserve, *args: str):
    _deploy(tmp_path, "v1")
    return forkserve("live_app:application", *args, cwd=tmp_path,
                     env={"PYTHONDONTWRITEBYTECODE": "1"})


def test_a_hup_during_a_reload_is_not_dropped(forkserve, tmp_path):
    """Deploy v2 + HUP, then v3 + HUP (twice) while v2 still imports: once
    v2's reload settles, one more reload (not two) brings v3."""
    server = _live(tmp_path, forkserve, "-w", "2")
    _deploy(tmp_path, "v2", import_seconds=2)
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(server.workers()) == 4, 10, what="v2 workers forked")
    v1_v2 = set(server.workers())
    time.sleep(0.5)
    _deploy(tmp_path, "v3", import_seconds=1)
    server.signal(signal.SIGHUP)
    time.sleep(0.2)
    server.signal(signal.SIGHUP)
    server.wait_log("Reload complete", count=2, timeout=30)
    # The v2 workers were told to drain when v3's were READY; one may still
    # finish a request it accepted before it saw the TERM.
    server.wait_workers(2, exclude=v1_v2, timeout=15)
    assert _get(server, "/version") == (200, b"v3")
    time.sleep(2.0)
    assert server.log.count("Reload complete") == 2, server.log[-3000:]
    assert "Reload in progress; another one will follow it" in server.log
    assert len(server.wait_workers(2, timeout=10)) == 2


def test_a_hup_during_a_failing_reload_is_not_dropped(forkserve, tmp_path):
    """v2 is broken and fails to import after a while; v3, deployed with a
    HUP meanwhile, is what serves next."""
    server = _live(tmp_path, forkserve, "-w", "1")
    v1 = set(server.workers())
    (tmp_path / "live_app.py").write_text("import time\ntime.sleep(1.5)\nraise ImportError('v2 is broken')\n")
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(server.workers()) == 2, 10, what="v2 worker forked")
    _deploy(tmp_path, "v3")
    server.signal(signal.SIGHUP)
    server.wait_log("Reload failed", timeout=20)
    server.wait_log("Reload complete", timeout=20)
    server.wait_workers(1, exclude=v1, timeout=15)  # v1's worker drained
    assert _get(server, "/version") == (200, b"v3")


def test_ttin_and_ttou_during_a_reload(forkserve, tmp_path):
    server = _live(tmp_path, forkserve, "-w", "2")
    _deploy(tmp_path, "v2", import_seconds=2)
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(server.workers()) == 4, 10, what="v2 workers forked")
    server.signal(signal.SIGTTIN)
    server.wait_log("Reload complete", timeout=30)
    pids = server.wait_workers(3, timeout=15)
    for _ in range(6):
        assert _get(server, "/version") == (200, b"v2")
    # Forked: 2 at start, 2 for the reload, 1 for TTIN, into the new
    # generation only (not a worker of the old one, retired at once).
    assert server.log.count("Booting worker with pid") == 5, server.log[-3000:]

    _deploy(tmp_path, "v3", import_seconds=2)
    server.signal(signal.SIGHUP)
    server.wait_log("Hang up: Master", count=2)
    try:
        wait_for(lambda: len(server.workers()) >= 5, 10, what="v3 workers forked")
    except AssertionError:
        raise AssertionError(f"{server.workers()}\n{server.log[-3000:]}") from None
    server.signal(signal.SIGTTOU)
    time.sleep(0.3)
    server.signal(signal.SIGTTOU)
    server.wait_log("Reload complete", count=2, timeout=30)
    server.wait_workers(1, exclude=set(pids), timeout=15)
    assert _get(server, "/version") == (200, b"v3")


def test_signals_during_a_blocking_preload_reload_are_not_lost(forkserve, tmp_path):
    """With --preload a HUP re-imports the app in the master, which blocks
    it for as long as the import takes.  Twenty signals arrive meanwhile,
    the last one a TERM: none is lost, the TERM stops the server."""
    server = _live(tmp_path, forkserve, "-w", "1", "--preload")
    _deploy(tmp_path, "v2", import_seconds=3)
    server.signal(signal.SIGHUP)
    server.wait_log("Hang up: Master")
    for _ in range(20):
        server.signal(signal.SIGUSR1)
        time.sleep(0.02)
    server.signal(signal.SIGTTIN)
    time.sleep(0.02)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    log = server.log
    assert "Handling signal: ttin" in log and "Handling signal: term" in log, log[-3000:]


def test_usr2_during_a_reload(forkserve, tmp_path):
    server = _live(tmp_path, forkserve, "-w", "1")
    old_master = server.pid
    _deploy(tmp_path, "v2", import_seconds=2)
    server.signal(signal.SIGHUP)
    wait_for(lambda: len(server.workers()) == 2, 10, what="v2 worker forked")
    server.signal(signal.SIGUSR2)

    def new_master():
        for child in psutil.Process(old_master).children():
            try:
                if any("forkserve: master" in part for part in child.cmdline()):
                    return child.pid
            except psutil.Error:
                pass
        return None

    new_pid = wait_for(new_master, 20, what="the re-executed master")
    server.seen_pids.add(new_pid)
    try:
        server.wait_log("Reload complete", timeout=30)
        server.wait_log("Ready:", count=2, timeout=30)
        # Forked and exec'd with its signals blocked, it unblocked them.
        assert _blocked_signals(new_pid) == 0
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        # The new master serves the new code alone.
        assert _get(server, "/version") == (200, b"v2")
        assert _get(server, "/pid")[1].decode() in {
            str(c.pid) for c in psutil.Process(new_pid).children()}
    finally:
        stop_handed_over_master(server, new_pid)


# -- memory --------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["sync", "asgi"])
def test_max_worker_memory_is_kept_under_load(forkserve, kind):
    """10 MB leaked per request, four clients, a 100 MiB limit: each worker
    checks its RSS after every request and stops accepting once over, so
    the peak stays near the limit; no request fails."""
    limit = 100
    server = forkserve(APP[kind], "-k", kind, "-w", "1", "--max-worker-memory", str(limit))
    peak = [0]
    stop = threading.Event()
    runaway = 3 * limit * 1048576

    def sample():
        while not stop.is_set():
            for pid in server.workers():
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                peak[0] = max(peak[0], rss)
                if rss > runaway:  # bounded, even when the limit is not kept
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with Prober(server, "/leak", clients=4, timeout=15) as probe:
            wait_for(lambda: server.log.count("max_worker_memory") >= 4, 60,
                     what="four recyclings")
    finally:
        stop.set()
        sampler.join(5)
    peak_mib = peak[0] / 1048576
    _report(f"max_worker_memory {limit} MiB under load ({kind})",
            f"{len(probe.results)} requests, {len(probe.errors)} failed, "
            f"peak RSS {peak_mib:.0f} MiB ({peak_mib / limit:.2f}x)")
    assert not probe.errors, probe.errors[:5]
    assert peak_mib < 1.5 * limit, peak_mib
    assert "was sent SIGKILL" not in server.log

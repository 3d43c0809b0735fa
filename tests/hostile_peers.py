"""Run the hostile-load scenarios against forkserve and the reference servers
and print a table (issue 12's closing note).

    cd <repo> && PYTHONPATH=$PWD:tests python tests/hostile_peers.py [--only NAME ...]

forkserve runs from this tree (both worker kinds); gunicorn (sync, gthread)
and uvicorn from the venv in $PEERS (default /tmp/peers), serving the same
apps (tests/apps/hostile_*.py).  A server that is missing, or has no setting
for what an attack is about, gets "n/a" and why.  Each cell is what the
scenario measured (tests/hostile_scenarios.py); tests/e2e/test_hostile.py
says what forkserve must achieve.  Not part of the test suite: it takes
several minutes and starts many servers.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

import hostile_scenarios as scenario  # noqa: E402
from attacks import CHUNK_SIZE_WHITESPACE, raise_nofile, ws_frame  # noqa: E402
from conftest import APPS, ROOT, Server, free_port  # noqa: E402

PEERS = Path(os.environ.get("PEERS", "/tmp/peers"))
MiB = 1 << 20
SERVERS = ["forkserve sync", "forkserve asgi", "gunicorn sync", "gunicorn gthread", "uvicorn"]


class NotApplicable(Exception):
    """This server has nothing to compare for this attack."""


class PeerServer(Server):
    """conftest's Server, for any of the five; a single-process uvicorn is
    its own worker."""

    def workers(self) -> list[int]:
        pids = super().workers()
        return pids or ([self.pid] if self.proc.poll() is None else [])


def start(name: str, workdir: Path, workers: int = 1, app_dir: Path = APPS,
          app_module: str | None = None, timeout: float | None = None,
          graceful: float | None = None, env: dict[str, str] | None = None,
          access_stdout: bool = False, preexec_fn: Callable[[], None] | None = None,
          wait: bool = True, extra: tuple[str, ...] = ()) -> PeerServer:
    """Start ``name`` on a free port with its error log in ``workdir``."""
    port = free_port()
    log = workdir / f"{name.replace(' ', '-')}-{port}.log"
    kind = "asgi" if name in ("forkserve asgi", "uvicorn") else "sync"
    module = app_module or ("hostile_asgi" if kind == "asgi" else "hostile_wsgi")
    app = f"{module}:{'app' if kind == 'asgi' else 'application'}"
    env = dict(env or {})
    # A caller's PYTHONPATH (the app's own directory) comes first; the
    # server's own entries (this tree for forkserve) are kept after it.
    app_path = [env.pop("PYTHONPATH")] if "PYTHONPATH" in env else []
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([*app_path, str(ROOT), str(APPS)]))
    full_env.pop("FORKSERVE_CMD_ARGS", None)
    full_env.update(env)
    stderr: Any = None
    if name.startswith("forkserve"):
        cmd = [sys.executable, "-m", "forkserve", "-k", kind, "-w", str(workers),
               "-b", f"127.0.0.1:{port}", "--error-logfile", str(log)]
        cmd += ["-t", str(timeout)] if timeout else []
        cmd += ["--graceful-timeout", str(graceful)] if graceful else []
        cmd += ["--access-logfile", "-"] if access_stdout else []
    elif name.startswith("gunicorn"):
        if not (PEERS / "bin" / "gunicorn").exists():
            raise NotApplicable(f"no gunicorn in {PEERS}")
        full_env["PYTHONPATH"] = os.pathsep.join([*app_path, str(APPS)])
        cmd = [str(PEERS / "bin" / "gunicorn"), "-k", name.split()[1], "-w", str(workers),
               "-b", f"127.0.0.1:{port}", "--error-logfile", str(log)]
        cmd += ["--threads", "4"] if name.endswith("gthread") else []
        cmd += ["-t", str(timeout)] if timeout else []
        cmd += ["--graceful-timeout", str(graceful)] if graceful else []
        cmd += ["--access-logfile", "-"] if access_stdout else []
    else:
        if not (PEERS / "bin" / "uvicorn").exists():
            raise NotApplicable(f"no uvicorn in {PEERS}")
        full_env["PYTHONPATH"] = os.pathsep.join([*app_path, str(APPS)])
        cmd = [str(PEERS / "bin" / "uvicorn"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers)]
        cmd += ["--timeout-graceful-shutdown", str(int(graceful))] if graceful else []
        cmd += [] if access_stdout else ["--no-access-log"]
        stderr = open(log, "wb")  # uvicorn's log goes to stderr
    cmd += [*extra, app]
    proc = subprocess.Popen(cmd, cwd=str(app_dir), env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE if access_stdout else subprocess.DEVNULL,
                            stderr=stderr if stderr is not None else
                            (None if preexec_fn else subprocess.DEVNULL),
                            preexec_fn=preexec_fn)
    server = PeerServer(proc, port, None, log)
    if wait:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if scenario.answered(("127.0.0.1", port), "/", timeout=1):
                break
            time.sleep(0.2)
        else:
            server.stop()
            raise RuntimeError(f"{name} did not start: {server.log[-500:]}")
        time.sleep(0.3 if workers == 1 else 1.0)  # all workers up
    server.workers()
    return server


# -- one function per row: (server name, work directory) -> cell text -------


def row_body_errors(name: str, tmp: Path) -> str:
    server = start(name, tmp)
    try:
        out = scenario.body_errors(server)
    finally:
        server.stop()
    died = [k for k, o in out.items() if not o["worker kept"]]
    statuses = sorted({str(o["status"]) for o in out.values()})
    return f"worker died on {len(died)}/4" if died else f"4/4 kept ({'/'.join(statuses)})"


def row_segfault(name: str, tmp: Path) -> str:
    server = start(name, tmp, workers=2)
    try:
        result = scenario.segfault_every(server, 2.0, 16.0)
    finally:
        server.stop()
    return f"{100 * result.ratio:.0f}% answered, longest gap {result.longest_gap:.1f}s"


def row_pipelined(name: str, tmp: Path) -> str:
    if name == "uvicorn":
        raise NotApplicable("no worker timeout")
    server = start(name, tmp, timeout=3)
    try:
        answers = scenario.pipelined_sleeps(server, 6)
    finally:
        server.stop()
    return f"{sum(1 for a in answers if a == (200, b'slept'))}/6 answered"


def row_trickle(name: str, tmp: Path) -> str:
    server = start(name, tmp)
    try:
        _, probes = scenario.trickled_body_ignored(server)
    finally:
        server.stop()
    return f"others {sum(probes.answered)}/4"


def row_term_import(name: str, tmp: Path) -> str:
    server = start(name, tmp, workers=2, graceful=15, env={"HOSTILE_IMPORT_DELAY": "3"},
                   wait=False)
    try:
        elapsed = scenario.term_during_import(server)
    finally:
        server.stop()
    return f"exit after {elapsed:.1f}s" if elapsed < 14 else "no exit in 14s"


def row_term_queued(name: str, tmp: Path) -> str:
    server = start(name, tmp)
    try:
        result = scenario.term_with_queued(server)
    finally:
        server.stop()
    return f"exit after {result.elapsed:.1f}s, queued served {result.queued_answered}/3"


def row_hup_reload(name: str, tmp: Path) -> str:
    kind = "asgi" if name in ("forkserve asgi", "uvicorn") else "sync"
    src = APPS / ("hostile_asgi.py" if kind == "asgi" else "hostile_wsgi.py")
    work = Path(tempfile.mkdtemp(dir=tmp))

    def deploy(version: str, delay: float) -> None:
        text = src.read_text().replace('VERSION = "v1"', f"VERSION = {version!r}")
        text = text.replace('IMPORT_DELAY = float(os.environ.get("HOSTILE_IMPORT_DELAY", "0"))',
                            f"IMPORT_DELAY = {delay}")
        (work / "hostile_live.py.tmp").write_text(text)
        (work / "hostile_live.py.tmp").replace(work / "hostile_live.py")
    deploy("v1", 0)
    # uvicorn reloads on HUP only with its multiprocess supervisor.
    server = start(name, tmp, workers=2 if name == "uvicorn" else 1, app_dir=work,
                   app_module="hostile_live", env={"PYTHONDONTWRITEBYTECODE": "1",
                                                   "PYTHONPATH": str(work)})
    try:
        result = scenario.hup_during_reload(server, deploy)
    finally:
        server.stop()
    return str(result)


def row_leak(name: str, tmp: Path) -> str:
    if not name.startswith("forkserve"):
        raise NotApplicable("no RSS limit setting")
    server = start(name, tmp, extra=("--max-worker-memory", "100"))
    try:
        watch = scenario.leak_under_load(server, 6.0, kill_above=400 * MiB)
    finally:
        server.stop()
    return (f"peak {watch.peak / MiB:.0f} MiB (limit 100)"
            + (", stopped by the test at 400" if watch.killed else ""))


def row_ws_flood(name: str, tmp: Path) -> str:
    if name != "forkserve asgi":
        raise NotApplicable("no WebSocket" if name != "uvicorn"
                            else f"no WebSocket library in {PEERS}")
    server = start(name, tmp, extra=("--ws-max-size", str(MiB)))
    try:
        sent, growth, killed = scenario.ws_flood(server)
    finally:
        server.stop()
    return f"took {sent / MiB:.0f} MiB, RSS +{growth / MiB:.0f} MiB"


def row_ws_errors(name: str, tmp: Path) -> str:
    if name != "forkserve asgi":
        raise NotApplicable("no WebSocket" if name != "uvicorn"
                            else f"no WebSocket library in {PEERS}")
    server = start(name, tmp)
    try:
        codes = [scenario.ws_protocol_error(server, frame) for frame in (
            ws_frame(0x1, b"x", mask=False), ws_frame(0x1, b"\xff\xfe"))]
    finally:
        server.stop()
    return "close " + ", ".join("none" if c is None else str(c) for c in codes)


def row_log_pipe(name: str, tmp: Path) -> str:
    server = start(name, tmp, access_stdout=True)
    try:
        elapsed, done = scenario.huge_user_agents(server, 100)
    finally:
        server.stop()
    return f"{done}/100 answered in {elapsed:.1f}s"


def _close_stdout_and_stderr() -> None:
    os.close(1)
    os.close(2)


def row_closed_fds(name: str, tmp: Path) -> str:
    try:
        server = start(name, tmp, preexec_fn=_close_stdout_and_stderr, access_stdout=False)
    except RuntimeError:
        return "does not start"
    try:
        ok = all(scenario.answered(scenario.addr_of(server)) for _ in range(3))
    finally:
        server.stop()
    return "starts, serves" if ok else "starts, does not serve"


def row_emfile(name: str, tmp: Path) -> str:
    server = start(name, tmp, extra=("--keep-alive", "30", "--header-timeout", "30")
                   if name.startswith("forkserve") else ())
    try:
        result = scenario.emfile(server, limit=48, held=80)
    finally:
        server.stop()
    return str(result)


def row_slowloris(name: str, tmp: Path) -> str:
    server = start(name, tmp)
    try:
        probes = scenario.slowloris(server, 1200)
    finally:
        server.stop()
    return f"probes {sum(probes.answered)}/4"


def row_idle_flood(name: str, tmp: Path) -> str:
    server = start(name, tmp, workers=2)
    try:
        flood = scenario.idle_connections(server, 10000)
    finally:
        server.stop()
    return (f"{flood.opened} open, probes {sum(flood.probes.answered)}/4, "
            f"RSS {flood.peak_rss / MiB:.0f} MiB")


def row_chunk_ws(name: str, tmp: Path) -> str:
    server = start(name, tmp)
    try:
        got = scenario.chunk_size_whitespace(server)
    finally:
        server.stop()
    return ", ".join(f"{got[k]}" for k in CHUNK_SIZE_WHITESPACE)


ROWS: dict[str, tuple[str, Callable[[str, Path], str]]] = {
    "body": ("body errors caught by the app (4 inputs)", row_body_errors),
    "segv": ("segfault every 2 s, 2 workers, 16 s", row_segfault),
    "pipelined": ("6 pipelined 1 s requests, timeout 3", row_pipelined),
    "trickle": ("10 GiB body trickled, app ignores it", row_trickle),
    "term-import": ("TERM during a 3 s import (graceful 15)", row_term_import),
    "term-queued": ("TERM, 1 in flight + 3 queued (2 s each)", row_term_queued),
    "hup": ("HUP v2 (3 s import), HUP v3 1 s later", row_hup_reload),
    "leak": ("5 MiB/request leak, 2 clients, RSS limit 100 MiB", row_leak),
    "ws-flood": ("WebSocket flood before accept, 3 s", row_ws_flood),
    "ws-errors": ("WebSocket unmasked frame / bad UTF-8", row_ws_errors),
    "log-pipe": ("access log to an unread pipe, 6 KB UA x 100", row_log_pipe),
    "closed-fds": ("started with stdout and stderr closed", row_closed_fds),
    "emfile": ("RLIMIT_NOFILE 48, 80 held connections", row_emfile),
    "slowloris": ("1,200 slowloris clients, 1 worker", row_slowloris),
    "idle": ("10,000 idle connections, 2 workers", row_idle_flood),
    "chunk-ws": ("chunk size `5 `, `0 `, `5\\t` (status)", row_chunk_ws),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(ROWS), help="rows to run")
    parser.add_argument("--servers", nargs="*", choices=SERVERS, default=SERVERS)
    args = parser.parse_args()
    raise_nofile(16384)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    print("| attack | " + " | ".join(args.servers) + " |")
    print("|---|" + "---|" * len(args.servers), flush=True)
    with tempfile.TemporaryDirectory(prefix="hostile-peers-") as tmp:
        for key in args.only or ROWS:
            title, row = ROWS[key]
            cells = []
            for name in args.servers:
                try:
                    cells.append(row(name, Path(tmp)))
                except NotApplicable as exc:
                    cells.append(f"n/a ({exc})")
                except Exception as exc:  # noqa: BLE001 - a cell, not a crash
                    cells.append(f"error: {type(exc).__name__}: {str(exc)[:60]}")
            print(f"| {title} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

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

from conftest import APPS, parse_response, read_until_close, wait_for

pytestmark = pytest.mark.e2e

APP = {"sync": "supervision_app:application", "asgi": "supervision_app:app"}


def _report(name: str, text: str) -> None:
    print(f"\n[supervision] {name}: {text}")


def _get(server, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on a fresh connection; (status, body)."""
    status, _, body = parse_response(server.raw(
        f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode(), timeout))
    return status, body


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



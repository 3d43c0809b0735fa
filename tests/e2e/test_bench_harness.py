"""bench/run.py still drives forkserve: its smoke mode starts each forkserve
server it knows, checks every scenario's answer and stops it by PID.

Functional only: the harness's numbers are for people, never asserted here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

SERVERS = ("forkserve-sync", "forkserve-threads", "forkserve-asgi")


def test_bench_smoke_runs_every_forkserve_server() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "forkserve")
    if not os.access(exe, os.X_OK):
        exe = shutil.which("forkserve") or ""
    if not exe:
        pytest.skip("no forkserve console script installed")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--smoke", "--forkserve", exe,
         "--servers", ",".join(SERVERS), "--server-cpu", "0", "--client-cpu", "0"],
        cwd=str(ROOT), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in SERVERS:
        line = next((ln for ln in lines if f" {name} " in ln), "")
        assert line.startswith("OK"), done.stdout
        assert "stop=SIGTERM" in line and "post=200" in line, line

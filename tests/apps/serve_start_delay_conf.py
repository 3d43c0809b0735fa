"""Config file for a test harness (tests/e2e/test_supervision.py): widens,
in every worker, the moment between the end of its boot (READY) and its
serving loop taking over, so that a TERM can be sent right into it.

A config file runs in the master before any fork, so patching the worker
classes here patches every worker.  The first ``_set_accepting(True)`` of a
worker (called by ``serve()`` just before its loop runs) writes the
worker's PID to $FS_SERVE_MARKER, then sleeps $FS_SERVE_DELAY seconds.
"""

import os
import time

from forkserve.workers.asgi import ASGIWorker
from forkserve.workers.sync import SyncWorker


def _widen(cls):
    original = cls._set_accepting
    if getattr(original, "_widened", False):  # the file runs again on HUP
        return

    def _set_accepting(self, on):
        if on and not getattr(self, "_serve_delayed", False):
            self._serve_delayed = True
            with open(os.environ["FS_SERVE_MARKER"], "a") as f:
                f.write(f"{os.getpid()}\n")
            time.sleep(float(os.environ.get("FS_SERVE_DELAY", "3")))
        original(self, on)

    _set_accepting._widened = True
    cls._set_accepting = _set_accepting


_widen(ASGIWorker)
_widen(SyncWorker)

"""forkserve.heartbeat: the record a worker writes and its master reads."""

from __future__ import annotations

import os
import signal
import time

from forkserve.heartbeat import Heartbeat, WorkerState


def test_state_beat_requests_and_current_line_round_trip():
    hb = Heartbeat()
    hb.set_state(WorkerState.READY)
    hb.set_requests(12345)
    hb.set_current(b"POST /catch HTTP/1.1")
    state, idle, count, line = hb.read()
    assert (state, count, line) == (WorkerState.READY, 12345, b"POST /catch HTTP/1.1")
    assert 0 <= idle < 1.0
    hb.set_current(b"")
    assert hb.read()[3] == b""
    hb.close()


def test_a_reader_in_another_process_never_sees_a_half_written_beat():
    """A beat must reach shared memory in one store.  struct.pack_into()
    zeroes its target before it writes the value: a master reading in that
    window saw a last beat at 0, 'no progress for <uptime> s', and killed a
    healthy worker with requests in flight (a rare 502 behind nginx)."""
    hb = Heartbeat()
    hb.set_requests(1)
    pid = os.fork()
    if pid == 0:  # the worker: beat and count as fast as it can
        try:
            deadline = time.monotonic() + 1.5
            n = 1
            while time.monotonic() < deadline:
                for _ in range(1000):
                    hb.beat()
                    n += 1
                    hb.set_requests(n)
        finally:
            os._exit(0)
    try:
        bad = reads = 0
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            for _ in range(1000):
                _, idle, count, _ = hb.read()
                reads += 1
                if idle > 60 or count == 0:
                    bad += 1
        assert reads > 10000
        assert bad == 0, f"{bad} torn reads in {reads}"
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        hb.close()

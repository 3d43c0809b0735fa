"""The master's pending signals and the signal mask across fork."""

from __future__ import annotations

import os
import signal
import time

from forkserve.master.signals import FORK_BLOCKED, NAMES, PendingSignals, blocked


def test_pending_signals_coalesce_in_arrival_order_with_counts():
    pending = PendingSignals()
    for sig in (signal.SIGTTIN, signal.SIGHUP, signal.SIGTTIN, signal.SIGUSR1, signal.SIGHUP,
                signal.SIGTTIN):
        pending.add(sig)
    assert signal.SIGHUP in pending and pending
    assert pending.pop() == (signal.SIGTTIN, 3)
    assert pending.pop() == (signal.SIGHUP, 2)
    assert pending.pop() == (signal.SIGUSR1, 1)
    assert pending.pop() is None and not pending


def test_no_signal_is_dropped_however_many_come():
    pending = PendingSignals()
    for _ in range(1000):
        pending.add(signal.SIGUSR1)
    pending.add(signal.SIGTERM)
    assert pending.pop() == (signal.SIGUSR1, 1000)
    assert pending.pop() == (signal.SIGTERM, 1)


def test_take_removes_one_signal_wherever_it_is():
    pending = PendingSignals()
    pending.add(signal.SIGHUP)
    pending.add(signal.SIGINT)
    pending.add(signal.SIGINT)
    assert pending.take(signal.SIGINT) == 2
    assert pending.take(signal.SIGQUIT) == 0
    assert pending.pop() == (signal.SIGHUP, 1)


def test_the_master_blocks_what_it_handles_across_fork():
    assert set(NAMES) | {signal.SIGCHLD, signal.SIGABRT} <= FORK_BLOCKED


def _fork_and_signal_early(block: bool) -> int:
    """Fork a child that takes 0.3 s before it installs its SIGUSR1 handler
    (as a worker does before its handlers are in place), signal it at once,
    and return its exit status: 0 if its own handler got the signal."""
    r, w = os.pipe()

    def child() -> None:
        os.close(r)
        time.sleep(0.3)
        got = []
        signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        os._exit(0 if got else 1)

    if block:
        with blocked():
            pid = os.fork()
            if pid == 0:
                child()
    else:
        pid = os.fork()
        if pid == 0:
            child()
    os.close(w)
    os.close(r)
    os.kill(pid, signal.SIGUSR1)
    _, status = os.waitpid(pid, 0)
    return status


def test_a_signal_sent_right_after_fork_reaches_the_childs_own_handler():
    # Without blocking, the signal meets the default disposition (or a
    # copy of the parent's handler) and is lost to the child's handler.
    assert _fork_and_signal_early(block=False) != 0
    status = _fork_and_signal_early(block=True)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def test_blocked_restores_the_parents_mask_and_delivers_what_came():
    got = []
    old = signal.signal(signal.SIGUSR2, lambda *a: got.append(1))
    try:
        with blocked():
            os.kill(os.getpid(), signal.SIGUSR2)
            assert not got
            assert signal.SIGUSR2 in signal.pthread_sigmask(signal.SIG_BLOCK, ())
        deadline = time.monotonic() + 2
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [1]
        assert signal.SIGUSR2 not in signal.pthread_sigmask(signal.SIG_BLOCK, ())
    finally:
        signal.signal(signal.SIGUSR2, old)

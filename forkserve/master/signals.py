"""The master's signals: received by tiny handlers, handled by the loop,
never lost.

A handler only records the signal in :class:`PendingSignals` and the C-level
handler writes a byte to the wake-up pipe (``signal.set_wakeup_fd``), which
the loop sleeps on.  Pending signals are coalesced instead of queued: one
entry per signal, in the order they first arrived, with a count.  A burst
cannot overflow anything, several HUPs ask for one reload, and TTIN/TTOU
keep their count (three TTINs are three more workers).

Forks happen with these signals blocked (:func:`blocked`): a child starts
with them blocked and unblocks them only once its own handlers are in place,
so a signal sent to a process that has just been forked is handled by that
process's handlers, not by a copy of the master's.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from typing import Any, Iterator, Sequence

__all__ = ["NAMES", "PendingSignals", "SignalInbox", "blocked"]

#: The signals the master acts on, by number, with the name its handler
#: method is called by (``handle_hup``...).
NAMES: dict[int, str] = {getattr(signal, f"SIG{name}"): name.lower() for name in
                         ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "USR1", "USR2", "WINCH")}

#: Blocked across fork: the master's signals, SIGCHLD, and SIGABRT (the
#: master's timeout kill, which must reach a worker's handler, not end the
#: process before it has one).
FORK_BLOCKED = frozenset(NAMES) | {signal.SIGCHLD, signal.SIGABRT}


class PendingSignals:
    """Signals received and not yet handled: each once, in arrival order,
    with how many times it came.

    :meth:`add` runs in a signal handler and :meth:`pop` in the main loop;
    Python runs handlers between bytecodes of the main thread, and both
    touch the dict with single operations, so a signal arriving during a
    pop either is counted in it or stays pending.
    """

    __slots__ = ("_pending",)

    def __init__(self) -> None:
        self._pending: dict[int, int] = {}

    def add(self, sig: int) -> None:
        self._pending[sig] = self._pending.get(sig, 0) + 1

    def pop(self) -> tuple[int, int] | None:
        """The oldest pending signal and its count, or None."""
        while self._pending:
            try:
                sig = next(iter(self._pending))
            except RuntimeError:  # a handler added one between iter and next
                continue
            return sig, self._pending.pop(sig)
        return None

    def take(self, sig: int) -> int:
        """Remove ``sig`` whatever its place; how many times it came."""
        return self._pending.pop(sig, 0)

    def __contains__(self, sig: int) -> bool:
        return sig in self._pending

    def __bool__(self) -> bool:
        return bool(self._pending)


class SignalInbox:
    """The master's handlers, its wake-up pipe and its pending signals."""

    def __init__(self) -> None:
        self.pending = PendingSignals()
        self.pipe_r = self.pipe_w = -1

    def install(self) -> None:
        """Handle the master's signals from now on.  They are unblocked last:
        a master started by an older one (USR2) was forked with them
        blocked, and any that came meanwhile are delivered here."""
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        for sig in NAMES:
            signal.signal(sig, self._received)
        signal.signal(signal.SIGCHLD, self._child)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.set_wakeup_fd(self.pipe_w, warn_on_full_buffer=False)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_BLOCKED)

    def wake(self) -> None:
        """Wake the loop from another thread (the reload watcher)."""
        try:
            os.write(self.pipe_w, b"w")
        except OSError:  # full: the loop wakes anyway; closed: stopping
            pass

    def _received(self, sig: int, frame: Any) -> None:
        self.pending.add(sig)

    def _child(self, sig: int, frame: Any) -> None:
        """Nothing to do: the wake-up byte woke the loop, which reaps."""

    def wait(self, timeout: float, fds: Sequence[int] = (),
             wfds: Sequence[int] = ()) -> list[int]:
        """Sleep until a signal, one of ``fds`` is readable, one of ``wfds``
        writable, or ``timeout``; the ready ``fds`` and ``wfds``."""
        try:
            ready, writable, _ = select.select([self.pipe_r, *fds], wfds, [], timeout)
        except InterruptedError:
            return []
        ready += writable
        if self.pipe_r in ready:
            try:
                while os.read(self.pipe_r, 4096):
                    pass
            except BlockingIOError:
                pass
        return [fd for fd in ready if fd != self.pipe_r]

    def close_in_child(self) -> None:
        """In a forked child: forget the master's pipe (its handlers are
        still the master's until the child installs its own)."""
        signal.set_wakeup_fd(-1)
        os.close(self.pipe_r)
        os.close(self.pipe_w)

    def reset_for_exec(self) -> None:
        """In a child about to exec a new master: default dispositions (the
        signals stay blocked across exec, see :meth:`install`)."""
        signal.set_wakeup_fd(-1)
        for sig in (*NAMES, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)


@contextlib.contextmanager
def blocked() -> Iterator[None]:
    """Block the master's signals (and SIGCHLD, SIGABRT) around a fork; the
    parent gets back its mask, and anything that came meanwhile, on exit."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, FORK_BLOCKED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)

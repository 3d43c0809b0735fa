"""USR2: start a new master from the current executable (new code, new
Python, new venv) and hand it the listening sockets.

The new master is a child of this one, found by its environment:
``FORKSERVE_FDS`` lists the inherited sockets and ``FORKSERVE_PARENT_PID``
names this master.  Both serve side by side until the operator stops the
old one with TERM; the pidfile moves to ``PIDFILE.oldbin`` meanwhile.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from .signals import blocked

if TYPE_CHECKING:
    from ..arbiter import Arbiter

__all__ = ["Reexec", "START_CWD"]

# Where the master started: a USR2 re-exec starts from here again, whatever
# --chdir did since.
START_CWD = os.getcwd()


class Reexec:
    """The re-executed master this one started, if any."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.pid = 0

    def start(self) -> None:
        """Fork and exec the new master with our sockets."""
        arbiter = self.arbiter
        log = arbiter.log
        if self.pid:
            log.warning("USR2 ignored: a re-executed master (%s) is running", self.pid)
            return
        if arbiter.pidfile_path:
            try:
                os.replace(arbiter.pidfile_path, arbiter.pidfile_path + ".oldbin")
                arbiter.pidfile_path += ".oldbin"
            except OSError as exc:
                log.error("Cannot rename the pidfile: %s", exc)
        try:
            arbiter.cfg.pre_exec(arbiter.hook_server)
        except Exception:
            log.exception("pre_exec hook failed")
        fds = [lst.fileno() for lst in arbiter.listeners]
        # The signals stay blocked in the child and across exec: what is
        # sent to the new master before it has handlers waits for them.
        with blocked():
            pid = os.fork()
            if pid == 0:
                self._exec(fds)
        self.pid = pid
        arbiter.set_title("old master")

    def _exec(self, fds: list[int]) -> None:
        arbiter = self.arbiter
        env = dict(os.environ)
        env["FORKSERVE_FDS"] = ",".join(map(str, fds))
        env["FORKSERVE_PARENT_PID"] = str(arbiter.pid)
        for fd in fds:
            os.set_inheritable(fd, True)
        arbiter.signals.reset_for_exec()
        argv0 = sys.argv[0]
        if argv0.endswith("__main__.py") or not os.path.exists(argv0):
            args = [sys.executable, "-m", "forkserve"] + sys.argv[1:]
        else:
            args = [sys.executable, argv0] + sys.argv[1:]
        try:
            os.chdir(START_CWD)
            os.execve(sys.executable, args, env)
        except OSError as exc:
            arbiter.log.error("Re-exec failed: %s", exc)
        os._exit(1)

    def exited(self, pid: int, status: int) -> bool:
        """A child that is not a worker exited; True if it was ours."""
        if pid != self.pid:
            return False
        self.arbiter.log.warning("Re-executed master %s exited (status %s)", pid, status)
        self.pid = 0
        self.arbiter.set_title("master")
        return True

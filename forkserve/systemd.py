"""systemd integration: the sd_notify protocol, spoken directly.

``NOTIFY_SOCKET`` names a unix datagram socket (a path, or an abstract name
starting with ``@``); each message is newline-separated ``KEY=VALUE`` lines.
No libsystemd and no extra dependency: the protocol is one sendto().
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["notify", "Notifier"]


def notify(message: str, environ: dict[str, str] | None = None) -> bool:
    """Send one sd_notify message; False if there is no NOTIFY_SOCKET."""
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode("utf-8", "replace"), addr)
    except OSError:
        return False
    return True


class Notifier:
    """The master's voice to systemd: state changes and the watchdog."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog = (int(usec) / 1e6 if usec.isdigit() and int(usec) > 0
                         and (not pid or pid == str(os.getpid())) else 0.0)
        self._last_ping = 0.0

    def ready(self, status: str) -> None:
        if self.enabled:
            notify(f"READY=1\nSTATUS={status}")

    def reloading(self) -> None:
        if self.enabled:
            usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
            notify(f"RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS=reloading")

    def stopping(self) -> None:
        if self.enabled:
            notify("STOPPING=1\nSTATUS=stopping")

    def status(self, status: str) -> None:
        if self.enabled:
            notify(f"STATUS={status}")

    def mainpid(self, pid: int) -> None:
        if self.enabled:
            notify(f"MAINPID={pid}")

    def tick(self) -> None:
        """Ping the watchdog at half its interval; call from the main loop."""
        if not self.watchdog:
            return
        now = time.monotonic()
        if now - self._last_ping >= self.watchdog / 2:
            self._last_ping = now
            notify("WATCHDOG=1")

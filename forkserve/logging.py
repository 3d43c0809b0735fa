"""Error log and access log.

The error log is Python logging with gunicorn's line format; the access log
is a separate file written with gunicorn's format atoms.  Both are reopened
on USR1 (logrotate), and a failing log write (full disk, closed pipe) is
dropped rather than raised into a worker.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import sys
import time
from typing import Any, Iterable

__all__ = ["setup_logging", "reopen_logs", "AccessLog", "AccessRecord", "error_log"]

error_log = logging.getLogger("forkserve.error")
_access_log = logging.getLogger("forkserve.access")

# A broken log destination must never take a worker down.
logging.raiseExceptions = False

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


class _Formatter(logging.Formatter):
    """``[2026-11-24 12:00:00 +0000] [PID] [LEVEL] message``."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
                         "%Y-%m-%d %H:%M:%S %z")


class _ReopenableFileHandler(logging.StreamHandler):
    """A file handler whose file is opened again on :meth:`reopen`."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self):
        return open(self.path, "a", buffering=1, encoding="utf-8", errors="backslashreplace")

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            try:
                old.close()
            except OSError:
                pass
        finally:
            self.release()


def _handler(target: str, default_stream) -> logging.Handler:
    if target == "-":
        handler: logging.Handler = logging.StreamHandler(default_stream)
    else:
        handler = _ReopenableFileHandler(target)
    return handler


def setup_logging(errorlog: str, loglevel: str, accesslog: str | None) -> None:
    """(Re)configure both logs from settings."""
    for logger in (error_log, _access_log):
        for h in list(logger.handlers):
            logger.removeHandler(h)
            if isinstance(h, _ReopenableFileHandler):
                h.close()
        logger.propagate = False
    handler = _handler(errorlog, sys.stderr)
    handler.setFormatter(_Formatter())
    error_log.addHandler(handler)
    error_log.setLevel(_LEVELS[loglevel])
    if accesslog:
        ah = _handler(accesslog, sys.stdout)
        ah.setFormatter(logging.Formatter("%(message)s"))
        _access_log.addHandler(ah)
        _access_log.setLevel(logging.INFO)
    else:
        _access_log.setLevel(logging.CRITICAL + 1)


def reopen_logs() -> None:
    """Reopen log files (USR1): logrotate has moved them away."""
    for logger in (error_log, _access_log):
        for h in logger.handlers:
            if isinstance(h, _ReopenableFileHandler):
                h.reopen()


class AccessRecord:
    """What the access log needs of one exchange; filled in by the worker."""

    __slots__ = ("peer", "method", "path", "query", "version", "status",
                 "sent", "request_headers", "response_headers", "start", "end")

    def __init__(self) -> None:
        self.peer = "-"
        self.method = "-"
        self.path = ""
        self.query = ""
        self.version = "1.1"
        self.status = 0
        self.sent = 0
        self.request_headers: Iterable[tuple[bytes, bytes]] = ()
        self.response_headers: Iterable[tuple[bytes, bytes]] = ()
        self.start = 0.0
        self.end = 0.0


def _header(headers: Iterable[tuple[bytes, bytes]], name: str) -> str:
    key = name.lower().encode("latin-1", "replace")
    for k, v in headers:
        if k.lower() == key:
            return v.decode("latin-1")
    return "-"


def _basic_user(headers: Iterable[tuple[bytes, bytes]]) -> str:
    auth = _header(headers, "authorization")
    if auth[:6].lower() != "basic ":
        return "-"
    try:
        user = base64.b64decode(auth[6:].encode("ascii"), validate=True).split(b":", 1)[0]
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return "-"
    return user.decode("latin-1") or "-"


class _Atoms:
    """Computes gunicorn's access log atoms on demand for ``%`` formatting."""

    __slots__ = ("r", "_wall")

    def __init__(self, record: AccessRecord, wall: float) -> None:
        self.r = record
        self._wall = wall

    def __getitem__(self, key: str) -> Any:
        r = self.r
        if key.startswith("{") and len(key) > 3 and key[-2] == "}":
            name, kind = key[1:-2], key[-1]
            if kind == "i":
                return _header(r.request_headers, name)
            if kind == "o":
                return _header(r.response_headers, name)
            if kind == "e":
                return os.environ.get(name, "-")
            return "-"
        duration = max(0.0, r.end - r.start)
        target = r.path + ("?" + r.query if r.query else "")
        match key:
            case "h":
                return r.peer
            case "l":
                return "-"
            case "u":
                return _basic_user(r.request_headers)
            case "t":
                return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(self._wall))
            case "r":
                return f"{r.method} {target} HTTP/{r.version}"
            case "m":
                return r.method
            case "U":
                return r.path
            case "q":
                return r.query
            case "H":
                return f"HTTP/{r.version}"
            case "s":
                return r.status
            case "B":
                return r.sent
            case "b":
                return r.sent if r.sent else "-"
            case "f":
                return _header(r.request_headers, "referer")
            case "a":
                return _header(r.request_headers, "user-agent")
            case "T":
                return int(duration)
            case "D":
                return int(duration * 1_000_000)
            case "M":
                return int(duration * 1000)
            case "L":
                return f"{duration:.6f}"
            case "p":
                return f"<{os.getpid()}>"
        return "-"


class AccessLog:
    """Writes one access log line per exchange, if an access log is set."""

    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    @property
    def enabled(self) -> bool:
        return _access_log.isEnabledFor(logging.INFO)

    def log(self, record: AccessRecord) -> None:
        """Format and write ``record``; never raises."""
        try:
            line = self.fmt % _Atoms(record, time.time())
        except Exception:
            error_log.exception("bad access_log_format %r", self.fmt)
            return
        _access_log.info(line)

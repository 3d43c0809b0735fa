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
import select
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


class _FDHandler(logging.Handler):
    """Writes each record with one ``os.write`` to a file or to stdout/stderr.

    One write per line keeps lines whole when several workers append to the
    same file.  A destination that cannot take the line now (a pipe nobody
    reads, a full disk) loses the line instead of blocking or crashing the
    process: a worker's liveness matters more than one log line.
    """

    def __init__(self, target: str, std_fd: int) -> None:
        super().__init__()
        self.path = None if target == "-" else target
        self.fd = std_fd if self.path is None else self._open(self.path)
        self.dropped = 0
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLOUT)

    @staticmethod
    def _open(path: str) -> int:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
        except Exception:
            self.handleError(record)
            return
        view = memoryview(data)
        try:
            while view:
                # Regular files always poll writable; a pipe only with room.
                if not self._poll.poll(0):
                    self.dropped += 1
                    return
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError:
            self.dropped += 1

    def reopen(self) -> None:
        """Open the path again (after logrotate moved the file away)."""
        if self.path is None:
            return
        self.acquire()
        try:
            new = self._open(self.path)
            old, self.fd = self.fd, new
            self._poll = select.poll()
            self._poll.register(self.fd, select.POLLOUT)
            os.close(old)
        except OSError:
            pass
        finally:
            self.release()

    def close(self) -> None:
        if self.path is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
        super().close()


def setup_logging(errorlog: str, loglevel: str, accesslog: str | None) -> None:
    """(Re)configure both logs from settings."""
    for logger in (error_log, _access_log):
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        logger.propagate = False
    handler = _FDHandler(errorlog, sys.stderr.fileno())
    handler.setFormatter(_Formatter())
    error_log.addHandler(handler)
    error_log.setLevel(_LEVELS[loglevel])
    if accesslog:
        ah = _FDHandler(accesslog, sys.stdout.fileno())
        ah.setFormatter(logging.Formatter("%(message)s"))
        _access_log.addHandler(ah)
        _access_log.setLevel(logging.INFO)
    else:
        _access_log.setLevel(logging.CRITICAL + 1)


def reopen_logs() -> None:
    """Reopen log files (USR1): logrotate has moved them away."""
    for logger in (error_log, _access_log):
        for h in logger.handlers:
            if isinstance(h, _FDHandler):
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
                # As gunicorn: "-" only when nothing is known, "0" for none.
                return "-" if r.sent is None else r.sent
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

    def log_exchange(self, req: Any, client: str, status: int, sent: int,
                     response_headers: Iterable[tuple[bytes, bytes]], start: float) -> None:
        """Log one exchange; ``req`` is an http.request.Request, ``start``
        the monotonic time it began."""
        record = AccessRecord()
        record.peer = client
        record.method = req.method.decode("latin-1")
        record.path = req.path.decode("latin-1")
        record.query = req.query.decode("latin-1")
        record.version = req.http_version.decode("latin-1")
        record.status = status
        record.sent = sent
        record.request_headers = req.headers
        record.response_headers = response_headers
        record.start = start
        record.end = time.monotonic()
        self.log(record)

    def log(self, record: AccessRecord) -> None:
        """Format and write ``record``; never raises."""
        try:
            line = self.fmt % _Atoms(record, time.time())
        except Exception:
            error_log.exception("bad access_log_format %r", self.fmt)
            return
        _access_log.info(line)

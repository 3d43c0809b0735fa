"""Error log and access log.

The error log is Python logging with gunicorn's line format; the access log
is a separate file written with gunicorn's format atoms.  Both are reopened
on USR1 (logrotate).

Writing a log line never blocks and never raises into a worker: a
destination that cannot take a line now (a pipe nobody reads, a full disk,
a reader gone) loses that line, the loss is counted, and at most every
``REPORT_INTERVAL`` seconds a warning "dropped N log lines" goes to the
error log.  Every line is at most ``MAX_LINE`` bytes (``PIPE_BUF``, the
most a pipe writes atomically): the access log cuts over-long atom values
to fit, other lines are cut; a cut ends with ``CUT_MARK``.  So lines from
several workers never interleave, and a line is written whole or not at all.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import errno
import json
import logging
import os
import re
import select
import socket
import stat
import sys
import time
from typing import Any, Iterable

__all__ = ["setup_logging", "reopen_logs", "capture_output", "log_drops", "AccessLog",
           "AccessRecord", "JsonFormatter", "json_line", "rfc3339", "error_log", "MAX_LINE",
           "CUT_MARK"]

error_log = logging.getLogger("forkserve.error")
_access_log = logging.getLogger("forkserve.access")

# A broken log destination must never take a worker down.
logging.raiseExceptions = False

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}

#: The longest line written, newline included: what a pipe takes in one
#: atomic write (POSIX guarantees at least 512; Linux has 4096).
MAX_LINE: int = getattr(select, "PIPE_BUF", 512)
#: Ends a value or a line that was cut to fit ``MAX_LINE``.
CUT_MARK = "...[cut]"
_CUT_MARK = CUT_MARK.encode("ascii")
#: Seconds between two "dropped N log lines" warnings of one process.
REPORT_INTERVAL = 5.0


class _Formatter(logging.Formatter):
    """``[2026-11-24 12:00:00 +0000] [PID] [LEVEL] message``."""

    def __init__(self) -> None:
        super().__init__("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s",
                         "%Y-%m-%d %H:%M:%S %z")


def rfc3339(wall: float) -> str:
    """``wall`` (seconds since the epoch) as RFC 3339 local time with
    microseconds and the UTC offset: ``2026-11-24T12:00:00.123456+00:00``."""
    return datetime.datetime.fromtimestamp(wall).astimezone().isoformat(
        timespec="microseconds")


_encode_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
_JSON_CUT = len(_encode_str(CUT_MARK)) - 2


def json_line(obj: dict[str, Any], limit: int = MAX_LINE - 1) -> str:
    """``obj`` as one line of JSON of at most ``limit`` bytes.

    ASCII only (``ensure_ascii``), so a control character, a quote or a
    byte that was not UTF-8 is an escape and never breaks the line.  An
    object too long for ``limit`` (a 6 KB User-Agent) gets
    ``"truncated": true`` and its longest strings cut to a common size,
    each ending with CUT_MARK: still valid JSON, the short fields whole."""
    line = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    if len(line) <= limit:
        return line
    obj = dict(obj, truncated=True)
    # Where the text is: a top-level string (key, None), or one in a group
    # of headers (key, name).
    strings: list[tuple[str, str | None]] = []
    for key, value in obj.items():
        if isinstance(value, str):
            strings.append((key, None))
        elif isinstance(value, dict):
            strings += [(key, name) for name, v in value.items() if isinstance(v, str)]

    def get(key: str, inner: str | None) -> str:
        return obj[key] if inner is None else obj[key][inner]

    def put(target: dict[str, Any], key: str, inner: str | None, text: str) -> None:
        if inner is None:
            target[key] = text
        else:
            target[key] = dict(target[key], **{inner: text})

    sizes = [len(_encode_str(get(k, i))) - 2 for k, i in strings]
    empty = dict(obj)
    for key, inner in strings:
        put(empty, key, inner, "")
    budget = limit - len(json.dumps(empty, ensure_ascii=True, separators=(",", ":")))
    if budget >= 0 and sizes:
        cap = _fair_cap(sizes, budget)
        cut = dict(obj)
        for (key, inner), size in zip(strings, sizes):
            if size > cap:
                put(cut, key, inner, _cut_json_text(get(key, inner), cap))
        line = json.dumps(cut, ensure_ascii=True, separators=(",", ":"))
        if len(line) <= limit:
            return line
    # Even the fields without their text do not fit: what is not text.
    bare = {k: v for k, v in obj.items() if isinstance(v, (int, float, bool)) or v is None}
    line = json.dumps(bare, ensure_ascii=True, separators=(",", ":"))
    return line if len(line) <= limit else '{"truncated":true}'


def _cut_json_text(text: str, cap: int) -> str:
    """The longest start of ``text`` whose JSON string form, with CUT_MARK
    appended, takes at most ``cap`` bytes (escapes counted whole)."""
    room = max(0, cap - _JSON_CUT)
    lo, hi = 0, min(len(text), room)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_encode_str(text[:mid])) - 2 <= room:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + CUT_MARK


class JsonFormatter(logging.Formatter):
    """One JSON object a line (``log_format = "json"``), usable by any
    logging handler (``"()": "forkserve.logging.JsonFormatter"`` in a
    logging dict config).

    An access-log record carries its fields (``record.access``, see
    :class:`AccessLog`); any other record gives ``time`` (RFC 3339),
    ``level``, ``pid``, ``logger``, ``message`` and, with a traceback,
    ``exception``.  Lines are bounded as :func:`json_line` says."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            return json_line(fields)
        obj: dict[str, Any] = {"time": rfc3339(record.created),
                               "level": record.levelname.lower(),
                               "pid": record.process, "logger": record.name,
                               "message": record.getMessage()}
        if record.exc_info:
            obj["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            obj["exception"] = record.exc_text
        if record.stack_info:
            obj["stack"] = self.formatStack(record.stack_info)
        return json_line(obj)


def _cut(line: bytes, limit: int) -> bytes:
    """``line`` cut to at most ``limit`` bytes, ending with the cut mark,
    never inside a UTF-8 sequence."""
    end = max(0, limit - len(_CUT_MARK))
    while end and (line[end] & 0xC0) == 0x80:  # a UTF-8 continuation byte
        end -= 1
    return line[:end] + _CUT_MARK


def _lines(text: str) -> list[bytes]:
    """``text`` as newline-terminated lines of at most MAX_LINE bytes each."""
    out = []
    for line in text.split("\n"):
        data = line.encode("utf-8", "backslashreplace")
        if len(data) >= MAX_LINE:
            data = _cut(data, MAX_LINE - 1)
        out.append(data + b"\n")
    return out


def _writes(lines: list[bytes]) -> list[bytes]:
    """Consecutive whole lines packed into writes of at most MAX_LINE bytes."""
    writes: list[bytes] = []
    current = b""
    for line in lines:
        if current and len(current) + len(line) > MAX_LINE:
            writes.append(current)
            current = b""
        current += line
    if current:
        writes.append(current)
    return writes


class _Destination:
    """One log destination, written without ever blocking.

    - a regular file: plain ``write`` (a disk does not stall on a reader);
    - a pipe, FIFO or terminal: a private open file description of it,
      non-blocking, so a write of at most PIPE_BUF bytes is all or nothing
      and a full pipe answers EAGAIN at once.  Setting O_NONBLOCK on the
      inherited descriptor instead would change it for every process
      sharing it (the supervisor's, the shell's);
    - a socket (journald's stdout): ``send`` with MSG_DONTWAIT;
    - without /proc (no private description), a pipe is polled for room
      first: two workers can still race for the last free slot.
    """

    def __init__(self, fd: int, owned: bool) -> None:
        self.fd = fd          # what we write to
        self._owned = [fd] if owned else []
        self._sock: socket.socket | None = None
        self._poll: Any = None
        self.whole_records = False
        try:
            mode = os.fstat(fd).st_mode
        except OSError:
            return  # closed: every write fails and is counted
        if stat.S_ISREG(mode):
            # Regular files: one write per record keeps a traceback together.
            self.whole_records = True
        elif stat.S_ISSOCK(mode):
            self._sock = socket.socket(fileno=os.dup(fd))
            self._poll = select.poll()
            self._poll.register(fd, select.POLLOUT)
        elif not owned:
            try:
                self.fd = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK
                                  | os.O_NOCTTY | os.O_CLOEXEC)
                self._owned.append(self.fd)
            except OSError:
                self._poll = select.poll()
                self._poll.register(fd, select.POLLOUT)

    def write(self, data: bytes) -> bool:
        """Write ``data`` (at most MAX_LINE bytes unless a regular file)
        whole, or nothing; never blocks.  False if it was not written;
        raises OSError for a destination that failed."""
        if self._poll is not None and not self._poll.poll(0):
            return False
        if self._sock is not None:
            n = self._sock.send(data, socket.MSG_DONTWAIT)
        else:
            n = os.write(self.fd, data)
        # Only a terminal or a stream socket out of room writes part of a
        # line; the rest is lost rather than waited for.
        return n == len(data)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        for fd in self._owned:
            try:
                os.close(fd)
            except OSError:
                pass
        self._owned = []


class _FDHandler(logging.Handler):
    """Writes each record to a file, or to stdout/stderr, never blocking.

    Lines are bounded to MAX_LINE bytes and each write is whole lines of at
    most that size, so lines from several workers never interleave.  A line
    the destination cannot take now is dropped and counted (``dropped``);
    the error log is told how many, at most every REPORT_INTERVAL seconds.
    """

    def __init__(self, target: str, std_fd: int, name: str) -> None:
        super().__init__()
        self.path = None if target == "-" else target
        self.label = f"{name} ({'stdout' if std_fd == 1 else 'stderr'})" \
            if self.path is None else f"{name} ({self.path})"
        fd = std_fd if self.path is None else self._open(self.path)
        self.dest = _Destination(fd, owned=self.path is not None)
        self.dropped = 0      # lines lost in this process, ever
        self.unreported = 0   # of which not yet in a warning
        self.last_error = ""

    @staticmethod
    def _open(path: str) -> int:
        # O_NONBLOCK: a FIFO without a reader fails at once (ENXIO) instead
        # of hanging the start; on a regular file it changes nothing.
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
                       | os.O_NONBLOCK, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.write_text(text, count=True)
        if _reports.pending:
            _reports.maybe_report()

    def write_text(self, text: str, count: bool) -> bool:
        """Write ``text`` (one record, maybe several lines); with ``count``,
        count the lines lost.  True if all of it was written."""
        data = text.encode("utf-8", "backslashreplace")
        if len(data) < MAX_LINE and b"\n" not in data:
            writes = [data + b"\n"]  # the common case: one short line
        else:
            lines = _lines(text)
            writes = [b"".join(lines)] if self.dest.whole_records else _writes(lines)
        for i, chunk in enumerate(writes):
            try:
                ok = self.dest.write(chunk)
                reason = "full"
            except OSError as exc:
                ok = False
                reason = errno.errorcode.get(exc.errno or 0, str(exc))
            if not ok:
                if not count:
                    return False
                lost = sum(piece.count(b"\n") for piece in writes[i:])
                self.dropped += lost
                self.unreported += lost
                self.last_error = reason
                _reports.pending = True
                return False
        return True

    def reopen(self) -> None:
        """Open the path again (after logrotate moved the file away)."""
        if self.path is None:
            return
        self.acquire()
        try:
            new = _Destination(self._open(self.path), owned=True)
            old, self.dest = self.dest, new
            old.close()
        except OSError:
            pass
        finally:
            self.release()

    def close(self) -> None:
        self.dest.close()
        super().close()


class _DropReports:
    """Tells the error log about dropped lines, at most every REPORT_INTERVAL."""

    def __init__(self) -> None:
        self.pending = False
        self.last = 0.0

    def maybe_report(self) -> None:
        now = time.monotonic()
        if now - self.last < REPORT_INTERVAL:
            return
        self.last = now
        targets = [h for h in error_log.handlers if isinstance(h, _FDHandler)]
        if not targets or not error_log.isEnabledFor(logging.WARNING):
            return
        pending = False
        for handler in _handlers():
            if not handler.unreported:
                continue
            message = (f"dropped {handler.unreported} log lines: the {handler.label} "
                       f"could not take them ({handler.last_error})")
            record = error_log.makeRecord(error_log.name, logging.WARNING, __file__, 0,
                                          message, None, None)
            written = True
            for target in targets:
                target.acquire()  # an RLock: the error log may be reporting itself
                try:
                    written = target.write_text(target.format(record), count=False) and written
                finally:
                    target.release()
            if written:
                handler.unreported = 0
            else:
                pending = True
        self.pending = pending or any(h.unreported for h in _handlers())

    def reset(self) -> None:
        """In a new worker: its own counts, starting from zero."""
        self.pending = False
        self.last = 0.0
        for handler in _handlers():
            handler.dropped = handler.unreported = 0


_reports = _DropReports()
os.register_at_fork(after_in_child=_reports.reset)


def _handlers() -> list[_FDHandler]:
    return [h for logger in (error_log, _access_log) for h in logger.handlers
            if isinstance(h, _FDHandler)]


def log_drops() -> dict[str, int]:
    """Lines this process could not write, per log (``error``, ``access``):
    what a metrics endpoint reports."""
    counts = {"error": 0, "access": 0}
    for name, logger in (("error", error_log), ("access", _access_log)):
        for h in logger.handlers:
            if isinstance(h, _FDHandler):
                counts[name] += h.dropped
    return counts


# Whether descriptors 1 and 2 follow the error log file (capture_output).
_capture = False


def capture_output(enabled: bool) -> None:
    """Send stdout and stderr, the descriptors (so ``print()`` and whatever
    a C library writes), to the error log file: gunicorn's
    ``capture_output``.  Takes effect at the next :func:`setup_logging`,
    and follows the file when it is reopened; with the error log on ``-``
    nothing changes."""
    global _capture
    _capture = enabled


def _capture_into(handler: _FDHandler) -> None:
    if not _capture or handler.path is None:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()  # what was printed before goes where it was meant to
        except (AttributeError, OSError, ValueError):
            pass
    try:
        os.dup2(handler.dest.fd, 1)
        os.dup2(handler.dest.fd, 2)
    except OSError:
        pass  # a log that cannot be captured into must not stop anything


def setup_logging(errorlog: str, loglevel: str, accesslog: str | None,
                  log_format: str = "text") -> None:
    """(Re)configure both logs from settings.  ``-`` is stderr (error log)
    or stdout (access log), by descriptor: ``sys.stderr`` may be None when
    the process started with it closed.  ``log_format`` ``json`` makes the
    error log's lines JSON objects (the access log's lines are made by
    :class:`AccessLog`, JSON when its ``json`` is set)."""
    for logger in (error_log, _access_log):
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()
        logger.propagate = False
    handler = _FDHandler(errorlog, 2, "error log")
    handler.setFormatter(JsonFormatter() if log_format == "json" else _Formatter())
    error_log.addHandler(handler)
    error_log.setLevel(_LEVELS[loglevel])
    # Before the access log opens: its "-" is descriptor 1, captured too.
    _capture_into(handler)
    if accesslog:
        ah = _FDHandler(accesslog, 1, "access log")
        ah.setFormatter(logging.Formatter("%(message)s"))
        _access_log.addHandler(ah)
        _access_log.setLevel(logging.INFO)
    else:
        _access_log.setLevel(logging.CRITICAL + 1)


def reopen_logs() -> None:
    """Reopen log files (USR1): logrotate has moved them away.  The
    ``logging.FileHandler``s of a user's logging config too, as gunicorn
    reopens them."""
    for h in _handlers():
        h.reopen()
    for logger in [logging.getLogger(), *(logging.getLogger(name) for name in
                                          list(logging.root.manager.loggerDict))]:
        for fh in logger.handlers:
            if isinstance(fh, logging.FileHandler) and fh.stream is not None:
                fh.acquire()
                try:
                    fh.close()
                    fh.stream = fh._open()
                except OSError:
                    pass  # reopened at its next line
                finally:
                    fh.release()
    for h in error_log.handlers:
        if isinstance(h, _FDHandler):
            _capture_into(h)


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
    """Computes gunicorn's access log atoms on demand for ``%`` formatting.

    With ``cap``, a text value longer than ``cap`` bytes (UTF-8) is cut to
    ``cap`` bytes ending with CUT_MARK; with ``sizes``, the size of each
    text value is appended to it (to compute a cap that fits the line).
    """

    __slots__ = ("r", "_wall", "cap", "sizes")

    def __init__(self, record: AccessRecord, wall: float, cap: int | None = None,
                 sizes: list[int] | None = None) -> None:
        self.r = record
        self._wall = wall
        self.cap = cap
        self.sizes = sizes

    def __getitem__(self, key: str) -> Any:
        value = self._atom(key)
        if (self.cap is None and self.sizes is None) or not isinstance(value, str):
            return value
        data = value.encode("utf-8", "backslashreplace")
        if self.sizes is not None:
            self.sizes.append(len(data))
        if self.cap is not None and len(data) > self.cap:
            return _cut(data, self.cap).decode("utf-8", "replace")
        return value

    def _atom(self, key: str) -> Any:
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


def _net_text(text: str) -> str:
    """A value the access record holds as latin-1 (one character a byte
    from the network) as UTF-8 text; bytes that are not UTF-8 become
    ``\\xNN`` escapes."""
    return text.encode("latin-1", "replace").decode("utf-8", "backslashreplace")


def _net_header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v.decode("utf-8", "backslashreplace")
    return None


# The {name}i, {name}o and {name}e atoms an access_log_format names.
_NAMED_ATOM = re.compile(r"%\(\{([^}]+)\}([ioe])\)")
_NAMED_FIELDS = {"i": "request_headers", "o": "response_headers", "e": "environ"}


class _JsonMessage:
    """An access record's JSON line, made only if a handler asks for the
    record's message (a JsonFormatter reads ``record.access`` instead)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return json_line(self.fields)


class AccessLog:
    """Writes one access log line per exchange, if an access log is set:
    ``fmt`` (gunicorn's atoms), or with ``json`` one JSON object (see
    :meth:`fields`)."""

    def __init__(self, fmt: str, json: bool = False) -> None:
        self.fmt = fmt
        self.json = json
        self.named: list[tuple[str, str]] = [
            (_NAMED_FIELDS[kind], name if kind == "e" else name.lower())
            for name, kind in _NAMED_ATOM.findall(fmt)]

    def fields(self, record: AccessRecord, wall: float) -> dict[str, Any]:
        """The JSON access-log object: what the atoms give, typed (numbers
        as numbers, absent values as null), text from the network decoded
        as UTF-8 with ``\\xNN`` for bytes that are not; the headers and
        environment variables ``fmt`` names as ``{name}i``, ``{name}o``,
        ``{name}e`` under ``request_headers``, ``response_headers`` and
        ``environ``."""
        duration = max(0.0, record.end - record.start)
        user = _basic_user(record.request_headers)
        headers = record.request_headers
        obj: dict[str, Any] = {
            "time": rfc3339(wall),
            "remote_addr": record.peer,
            "user": None if user == "-" else _net_text(user),
            "method": _net_text(record.method),
            "path": _net_text(record.path),
            "query": _net_text(record.query),
            "protocol": f"HTTP/{record.version}",
            "status": record.status,
            "bytes": record.sent,
            "referer": _net_header(headers, b"referer"),
            "user_agent": _net_header(headers, b"user-agent"),
            "duration_us": round(duration * 1_000_000),
            "duration": round(duration, 6),
            "pid": os.getpid(),
        }
        for group, name in self.named:
            if group == "environ":
                value: str | None = os.environ.get(name)
            else:
                source = headers if group == "request_headers" else record.response_headers
                value = _net_header(source, name.encode("latin-1", "replace"))
            obj.setdefault(group, {})[name] = value
        return obj

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
        """Format and write ``record``; never raises.

        A line over MAX_LINE bytes (a 6 KB User-Agent) is made to fit by
        cutting its longest text atoms to a common size, so the short ones
        (status, time, size) stay whole."""
        wall = time.time()
        if self.json:
            try:
                fields = self.fields(record, wall)
            except Exception:
                error_log.exception("cannot make the JSON access log line")
                return
            _access_log.info("%s", _JsonMessage(fields), extra={"access": fields})
            return
        try:
            line = self.fmt % _Atoms(record, wall)
            # UTF-8 takes at most 2 bytes for a latin-1 character.
            if 2 * len(line) >= MAX_LINE:
                size = len(line.encode("utf-8", "backslashreplace"))
                if size >= MAX_LINE:
                    sizes: list[int] = []
                    self.fmt % _Atoms(record, wall, sizes=sizes)
                    budget = MAX_LINE - 1 - (size - sum(sizes))
                    line = self.fmt % _Atoms(record, wall, cap=_fair_cap(sizes, budget))
        except Exception:
            error_log.exception("bad access_log_format %r", self.fmt)
            return
        _access_log.info(line)


def _fair_cap(sizes: list[int], budget: int) -> int:
    """The largest ``cap`` with ``sum(min(s, cap) for s in sizes) <= budget``
    (at least the cut mark's length: the writer cuts what still overflows)."""
    remaining = budget
    ordered = sorted(sizes)
    for i, size in enumerate(ordered):
        left = len(ordered) - i
        if size * left > remaining:
            return max(len(CUT_MARK), remaining // left)
        remaining -= size
    return max(ordered, default=len(CUT_MARK))

"""statsd metrics with gunicorn's settings and names.

gunicorn users keep their dashboards: the same metrics, the same types,
the same prefix and dogstatsd tag handling (``statsd_host``,
``statsd_prefix``, ``dogstatsd_tags``, ``enable_backlog_metric``):

- per request, from the worker: ``gunicorn.request.duration`` (timer, ms),
  ``gunicorn.requests`` and ``gunicorn.request.status.<code>`` (counters);
- from the master: ``gunicorn.workers`` (gauge, when the count changes) and,
  with ``enable_backlog_metric``, ``gunicorn.backlog`` (histogram: the
  connections waiting in the listen queues, once a tick);
- from any process: ``gunicorn.log.critical``, ``.error``, ``.warning`` and
  ``.exception`` (counters, one per error-log record at that level).

:class:`Packets` is the sans-I/O part (metric in, datagram bytes out);
:class:`Sender` owns the socket.  Sending never blocks and never raises: a
non-blocking datagram socket per process, opened on first use after fork;
a datagram the kernel or the peer refuses (ENOBUFS, EAGAIN, ECONNREFUSED,
no unix socket there) is counted in ``Sender.errors`` and dropped, the
loss UDP statsd accepts anyway.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import socket
import threading
import weakref
from typing import Any

from .sockets import listen_queue

__all__ = ["parse_address", "check_prefix", "check_tags", "Packets", "Sender", "configure",
           "current", "MasterMetrics", "MAX_DATAGRAM"]

#: Largest datagram sent: what fits an Ethernet MTU without fragments (the
#: size dogstatsd clients use); lines are never split across datagrams.
MAX_DATAGRAM = 1432
DEFAULT_PORT = 8125


def parse_address(value: str) -> tuple[int, Any]:
    """``statsd_host`` as gunicorn reads it: ``unix:PATH`` or
    ``unix://PATH`` (a unix datagram socket), ``HOST:PORT``, ``[IPV6]:PORT``
    or ``HOST`` (port 8125).  Returns (address family, socket address);
    ValueError says what was expected."""
    if value.startswith("unix:"):
        path = value[len("unix://"):] if value.startswith("unix://") else value[len("unix:"):]
        if not path or "\0" in path:
            raise ValueError(f"expected unix:PATH, got {value!r}")
        return socket.AF_UNIX, path
    host, port = value, str(DEFAULT_PORT)
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"expected [IPV6]:PORT, got {value!r}")
        port = rest[1:] or port
    elif ":" in value:
        host, _, port = value.rpartition(":")
    if not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, [IPV6]:PORT or unix:PATH, got {value!r}")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        family = socket.AF_UNSPEC  # a name: resolved when the socket opens
    return family, (host, int(port))


def check_prefix(value: str) -> str:
    """A prefix goes before every name: nothing that ends a name."""
    if not value.isascii() or re.search(r"[:|@#\s]", value):
        raise ValueError(f"expected ASCII without ':', '|', '@', '#' or spaces, got {value!r}")
    return value


def check_tags(value: str) -> str:
    """dogstatsd tags (``tag1:value1,tag2``) go after the metric's ``|#``."""
    if not value.isascii() or re.search(r"[|@#\s]", value):
        raise ValueError(f"expected ASCII tags (name:value,...) without '|', '@', '#' or "
                         f"spaces, got {value!r}")
    return value


class Packets:
    """Metric lines as gunicorn writes them; sans-I/O.

    ``prefix`` gets one trailing dot (``app`` and ``app.`` both give
    ``app.gunicorn.requests``); ``tags`` are appended to every line as
    ``|#tags``, dogstatsd's form."""

    def __init__(self, prefix: str = "", tags: str = "") -> None:
        stripped = prefix.rstrip(".")
        self.prefix = stripped + "." if stripped else ""
        self.suffix = "|#" + tags if tags else ""

    def line(self, name: str, value: Any, kind: str) -> bytes:
        """One metric: ``kind`` is statsd's type (c, ms, g, h)."""
        rate = "|@1.0" if kind == "c" else ""
        return f"{self.prefix}{name}:{value}{kind and '|' + kind}{rate}{self.suffix}".encode(
            "ascii")

    def request(self, status: int, seconds: float) -> list[bytes]:
        """What one request sends, as gunicorn's access hook does: its
        duration, the request count and the status count."""
        lines = [self.line("gunicorn.request.duration", f"{seconds * 1000.0:.3f}", "ms"),
                 self.line("gunicorn.requests", 1, "c")]
        if 100 <= status <= 999:
            lines.append(self.line(f"gunicorn.request.status.{status}", 1, "c"))
        return lines


def datagrams(lines: list[bytes], limit: int = MAX_DATAGRAM) -> list[bytes]:
    """Lines joined by newlines (one datagram for several metrics, which
    statsd, the Datadog agent, Telegraf and statsd_exporter read), each
    datagram at most ``limit`` bytes unless one line alone is longer."""
    out: list[bytes] = []
    current = b""
    for line in lines:
        if current and len(current) + 1 + len(line) > limit:
            out.append(current)
            current = b""
        current = current + b"\n" + line if current else line
    if current:
        out.append(current)
    return out


_open_senders: "weakref.WeakSet[Sender]" = weakref.WeakSet()


def _forget_sockets() -> None:
    # In a child after fork: its own socket, opened on first use; the
    # parent's stays the parent's.
    for sender in list(_open_senders):
        sender.close()


os.register_at_fork(after_in_child=_forget_sockets)


class Sender:
    """Sends datagrams to a statsd server without blocking; never raises."""

    def __init__(self, address: str, prefix: str = "", tags: str = "") -> None:
        self.address = address
        self.family, self.sockaddr = parse_address(address)
        self.packets = Packets(prefix, tags)
        self.sock: socket.socket | None = None
        self._connected = False
        self._opening = threading.Lock()
        self.sent = 0                       # datagrams sent by this process
        self.errors: dict[str, int] = {}    # datagrams lost, by errno name

    def _open(self) -> socket.socket | None:
        with self._opening:  # threads of a sync worker: one socket, not one each
            return self.sock or self._open_socket()

    def _open_socket(self) -> socket.socket | None:
        family, target = self.family, self.sockaddr
        try:
            if family == socket.AF_UNSPEC:
                # A host name, resolved once per process (gunicorn: once).
                info = socket.getaddrinfo(target[0], target[1], type=socket.SOCK_DGRAM)
                family, _, _, _, target = info[0]
            sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC)
        except OSError as exc:
            self._count(exc)
            return None
        self.sockaddr = target
        self.family = family
        self._connected = False
        if family != socket.AF_UNIX:
            # A connected UDP socket skips the route lookup per datagram.
            # A unix socket is not connected: its server may come later.
            try:
                sock.connect(target)
                self._connected = True
            except OSError:
                pass
        self.sock = sock
        _open_senders.add(self)
        return sock

    def _count(self, exc: OSError) -> None:
        name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        self.errors[name] = self.errors.get(name, 0) + 1

    def send_lines(self, lines: list[bytes]) -> None:
        """Send metric lines, packed into as few datagrams as fit."""
        sock = self.sock or self._open()
        if sock is None:
            return
        for data in datagrams(lines):
            try:
                if self._connected:
                    sock.send(data)
                else:
                    sock.sendto(data, self.sockaddr)
                self.sent += 1
            except OSError as exc:
                self._count(exc)

    def request(self, status: int, seconds: float) -> None:
        """One request's metrics (see :meth:`Packets.request`)."""
        self.send_lines(self.packets.request(status, seconds))

    def increment(self, name: str, value: int = 1) -> None:
        self.send_lines([self.packets.line(name, value, "c")])

    def gauge(self, name: str, value: int) -> None:
        self.send_lines([self.packets.line(name, value, "g")])

    def histogram(self, name: str, value: int) -> None:
        self.send_lines([self.packets.line(name, value, "h")])

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


class _LogCounter(logging.Filter):
    """Counts error-log records as gunicorn's statsd logger does: one
    ``gunicorn.log.<level>`` per warning, error and critical; an error
    that carries a traceback (``log.exception``) counts as ``exception``."""

    def filter(self, record: logging.LogRecord) -> bool:
        sender = _current
        if sender is not None and record.levelno >= logging.WARNING:
            if record.levelno >= logging.CRITICAL:
                level = "critical"
            elif record.levelno >= logging.ERROR:
                level = "exception" if _has_traceback(record) else "error"
            else:
                level = "warning"
            sender.increment("gunicorn.log." + level)
        return True


def _has_traceback(record: logging.LogRecord) -> bool:
    # forkserve logs an app's failure as an error with the traceback in its
    # text ("Error handling request ...:\n%s", format_exc()); gunicorn logs
    # it with log.exception.  Both count as gunicorn.log.exception.
    if record.exc_info:
        return True
    args = record.args if isinstance(record.args, tuple) else ()
    return any(isinstance(a, str) and a.startswith("Traceback (most recent call last)")
               for a in args)


_current: Sender | None = None
_log_counter = _LogCounter()


def configure(cfg: Any) -> Sender | None:
    """Set this process's sender from the settings (None: statsd off) and
    count the error log's warnings and errors.  Workers forked afterwards
    inherit it and open their own socket."""
    global _current
    old = _current
    if cfg.statsd_host is None:
        _current = None
    elif old is None or (old.address, old.packets.prefix, old.packets.suffix) != (
            cfg.statsd_host, Packets(cfg.statsd_prefix).prefix,
            Packets("", cfg.dogstatsd_tags).suffix):
        _current = Sender(cfg.statsd_host, cfg.statsd_prefix, cfg.dogstatsd_tags)
    if old is not None and old is not _current:
        old.close()
    error_log = logging.getLogger("forkserve.error")
    if _log_counter not in error_log.filters:
        error_log.addFilter(_log_counter)
    return _current


class MasterMetrics:
    """What the master sends: ``gunicorn.workers`` when the number of
    workers changes, ``gunicorn.backlog`` at most once a second when
    asked for (gunicorn: each pass of its loop)."""

    BACKLOG_INTERVAL = 1.0

    def __init__(self) -> None:
        self.last_workers = -1
        self.next_backlog = 0.0

    def tick(self, sender: Sender | None, workers: int, backlog_socks: list[socket.socket],
             now: float) -> None:
        """Called from the master's loop; ``backlog_socks`` empty unless
        enable_backlog_metric."""
        if sender is None:
            self.last_workers = -1  # statsd turned on by a reload: send it again
            return
        if workers != self.last_workers:
            self.last_workers = workers
            sender.gauge("gunicorn.workers", workers)
        if backlog_socks and now >= self.next_backlog:
            self.next_backlog = now + self.BACKLOG_INTERVAL
            sender.histogram("gunicorn.backlog",
                             sum((listen_queue(s) or (0, 0))[0] for s in backlog_socks))


def current() -> Sender | None:
    """This process's sender, or None when statsd is off."""
    return _current

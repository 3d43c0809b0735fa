"""The master's control listener (``metrics_bind``): ``/metrics``,
``/livez`` and ``/readyz``, served from the master's own loop.

The master must never wait on a client: every socket here is
non-blocking and the loop's one ``select`` watches them beside the signal
pipe; each connection is a small state machine (READING a request head,
WRITING the response) with hard bounds:

* a head of at most 8 KiB (parsed by forkserve's request reader; a larger
  one gets a 431 and is closed), read at most 64 KiB per wake-up;
* 2 s per connection, from accept to the last byte written;
* at most 64 connections at once: a new one closes the oldest, so idle
  connections cannot crowd out a scraper, and there is never more work
  per tick than that.

One response per connection, then close (HTTP/1.0 style, with
``Connection: close``): scrapes and health checks come once a second or
less, and this keeps the state machine to two states.

A worker never sees these sockets: the forked child closes them first
thing (:meth:`ControlListener.close_in_child`).  After a USR2 the new
master retries binding each tick until the old master has let go of the
address.
"""

from __future__ import annotations

import enum
import errno
import os
import socket
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from ..exposition import OPENMETRICS_TYPE, PROMETHEUS_TYPE, render, wants_openmetrics
from ..http.request import NEED_DATA, HTTPError, Limits, Request, RequestReader
from ..http.response import date_header, status_line
from ..sockets import bind, parse_address

if TYPE_CHECKING:
    from ..arbiter import Arbiter

__all__ = ["ControlListener", "MAX_CONNECTIONS", "CONNECTION_TIME", "HEAD_LIMIT"]

HEAD_LIMIT = 8192
CONNECTION_TIME = 2.0
MAX_CONNECTIONS = 64
_READ_PER_WAKE = 65536
_ACCEPT_PER_WAKE = 64
_LIMITS = Limits(request_line=2048, fields=32, field_size=4096, head=HEAD_LIMIT)
_TEXT = b"text/plain; charset=utf-8"


class ConnState(enum.Enum):
    READING = "reading"
    WRITING = "writing"


class _Conn:
    __slots__ = ("sock", "fd", "state", "deadline", "reader", "out")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = ConnState.READING
        self.deadline = now + CONNECTION_TIME
        self.reader = RequestReader(_LIMITS)
        self.out = memoryview(b"")


class ControlListener:
    """The listening socket and its connections, driven by the arbiter's
    loop through ``arbiter.readers`` / ``arbiter.writers``."""

    def __init__(self, arbiter: Arbiter, address: str) -> None:
        self.arbiter = arbiter
        self.address = parse_address(address)
        self.sock: socket.socket | None = None
        self.conns: OrderedDict[int, _Conn] = OrderedDict()  # oldest first
        self._unix_ino = 0
        self._bind_warned = False

    # -- the listening socket ----------------------------------------------------

    def open(self, retry: bool = True) -> bool:
        """Bind and listen.  With ``retry``, an address in use (an older
        master's, during a USR2) returns False and a later tick tries
        again; without, it raises."""
        addr = self.address
        try:
            sock = bind(addr, MAX_CONNECTIONS)
            if addr.kind == "unix":
                self._unix_ino = os.stat(addr.path).st_ino
            sock.setblocking(False)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or not retry:
                raise
            if not self._bind_warned:
                self._bind_warned = True
                self.arbiter.log.warning("metrics_bind %s is in use; retrying each second",
                                         self.address)
            return False
        self.sock = sock
        self.arbiter.readers[sock.fileno()] = self._accept
        self.arbiter.log.info("Control listener (metrics, health) at: %s", self.address)
        return True

    @property
    def port(self) -> int:
        """The bound TCP port (0 for a unix socket or while unbound)."""
        if self.sock is None or self.sock.family == socket.AF_UNIX:
            return 0
        return self.sock.getsockname()[1]

    def close(self) -> None:
        """Close everything; remove the unix socket file if it is ours."""
        for conn in list(self.conns.values()):
            self._drop(conn)
        if self.sock is None:
            return
        self.arbiter.readers.pop(self.sock.fileno(), None)
        self.sock.close()
        self.sock = None
        if self._unix_ino:
            try:
                if os.stat(self.address.path).st_ino == self._unix_ino:
                    os.unlink(self.address.path)
            except OSError:
                pass

    def close_in_child(self) -> None:
        """In a forked worker: close the sockets, touch nothing else."""
        for conn in self.conns.values():
            conn.sock.close()
        if self.sock is not None:
            self.sock.close()

    # -- the loop's hooks ------------------------------------------------------

    def tick(self, now: float) -> None:
        """Close connections past their time; retry a bind that failed."""
        if self.sock is None:
            self.open()
        while self.conns:
            conn = next(iter(self.conns.values()))
            if conn.deadline > now:
                break
            self._drop(conn)

    def next_deadline(self) -> float:
        """When :meth:`tick` has something to do, at the latest (inf: never)."""
        if self.conns:
            return next(iter(self.conns.values())).deadline
        return float("inf")

    def _accept(self) -> None:
        assert self.sock is not None
        now = time.monotonic()
        for _ in range(_ACCEPT_PER_WAKE):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again next wake
                self.arbiter.log.warning("Control listener: accept failed: %s", exc)
                return
            sock.setblocking(False)
            if len(self.conns) >= MAX_CONNECTIONS:
                self._drop(next(iter(self.conns.values())))
            conn = _Conn(sock, now)
            self.conns[conn.fd] = conn
            self.arbiter.readers[conn.fd] = lambda c=conn: self._readable(c)

    def _readable(self, conn: _Conn) -> None:
        got = 0
        while got < _READ_PER_WAKE:
            try:
                data = conn.sock.recv(16384)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._drop(conn)
                return
            if not data:
                self._drop(conn)  # closed before a complete request
                return
            got += len(data)
            conn.reader.feed(data)
            try:
                event = conn.reader.next_event()
            except HTTPError as exc:
                self._respond(conn, exc.status, _TEXT, b"%d\n" % exc.status, False)
                return
            if isinstance(event, Request):
                self._respond(conn, *self.route(event))
                return
            if event is not NEED_DATA:  # pragma: no cover - a head comes first
                self._drop(conn)
                return

    def route(self, req: Request) -> tuple[int, bytes, bytes, bool]:
        """(status, content type, body, head only) for a request."""
        head_only = req.method == b"HEAD"
        if req.method not in (b"GET", b"HEAD"):
            return 405, _TEXT, b"only GET and HEAD\n", head_only
        path = req.path
        if path == b"/metrics":
            accept = next((v for k, v in req.headers if k == b"accept"), None)
            om = wants_openmetrics(accept)
            body = render(self.arbiter.metrics.collect(), om)
            return 200, OPENMETRICS_TYPE if om else PROMETHEUS_TYPE, body, head_only
        if path == b"/livez":
            return 200, _TEXT, b"ok\n", head_only
        if path == b"/readyz":
            why = self.arbiter.not_ready_because()
            if why:
                return 503, _TEXT, f"not ready: {why}\n".encode(), head_only
            return 200, _TEXT, b"ready\n", head_only
        return 404, _TEXT, b"not found; try /metrics, /livez or /readyz\n", head_only

    def _respond(self, conn: _Conn, status: int, ctype: bytes, body: bytes,
                 head_only: bool) -> None:
        head = b"".join((status_line(b"1.1", status), b"server: forkserve\r\n", date_header(),
                         b"content-type: ", ctype, b"\r\n",
                         b"content-length: %d\r\n" % len(body),
                         b"cache-control: no-store\r\nconnection: close\r\n\r\n"))
        conn.out = memoryview(head if head_only else head + body)
        conn.state = ConnState.WRITING
        self.arbiter.readers.pop(conn.fd, None)
        self._writable(conn)
        if conn.fd in self.conns and conn.state is ConnState.WRITING:
            self.arbiter.writers[conn.fd] = lambda c=conn: self._writable(c)

    def _writable(self, conn: _Conn) -> None:
        try:
            while conn.out:
                n = conn.sock.send(conn.out)
                conn.out = conn.out[n:]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self.conns.pop(conn.fd, None)
        self.arbiter.readers.pop(conn.fd, None)
        self.arbiter.writers.pop(conn.fd, None)
        conn.sock.close()

"""Attack clients for the hostile-load suite (tests/e2e/test_hostile.py)
and for the comparison with gunicorn and uvicorn (tests/hostile_peers.py).

Each one speaks raw bytes over a loopback socket to an address
``(host, port)``, so that it does not care which server it attacks; each
is bounded in time (socket timeouts, deadlines) and in what it sends.
Nothing here imports forkserve.
"""

from __future__ import annotations

import base64
import errno
import os
import resource
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import psutil

Addr = tuple[str, int]

# -- one exchange ------------------------------------------------------------


def connect(addr: Addr, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(addr, timeout=timeout)


def read_until_close(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    """What the peer sends until it closes (or resets), at most ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            break
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def exchange(addr: Addr, data: bytes, timeout: float = 5.0, half_close: bool = False) -> bytes:
    """Send ``data`` on a new connection and return all bytes until the
    server closes (or ``timeout`` passes with nothing new)."""
    with connect(addr, timeout) as s:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return read_until_close(s)


def status_of(raw: bytes) -> int | None:
    """The status code of the first response in ``raw``, None if none."""
    if not raw.startswith(b"HTTP/1."):
        return None
    try:
        return int(raw.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None


def read_response(sock: socket.socket, buf: bytearray | None = None) -> tuple[int, dict, bytes]:
    """One response with a Content-Length body (what the test apps send):
    (status, {lower-case name: value}, body).  ``buf`` keeps bytes read past
    it (pipelining)."""
    buf = bytearray() if buf is None else buf
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before a complete response head: {bytes(buf)[:200]!r}")
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    n = int(headers.get("content-length", "0"))
    while len(rest) < n:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed inside a response body")
        rest += data
    buf[:] = rest[n:]
    return int(lines[0].split(b" ")[1]), headers, rest[:n]


def get(addr: Addr, path: str = "/", timeout: float = 5.0,
        headers: Iterable[tuple[str, str]] = ()) -> tuple[int, bytes]:
    """One GET with Connection: close: (status, body); raises on failure."""
    head = f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    with connect(addr, timeout) as s:
        s.sendall((head + "\r\n").encode("latin-1"))
        status, _, body = read_response(s)
        return status, body


def answered(addr: Addr, path: str = "/", timeout: float = 5.0) -> bool:
    try:
        return get(addr, path, timeout)[0] == 200
    except OSError:
        return False


# -- bodies the app's read() fails on (issue 12 item 1) -----------------------

_POST = b"POST /catch-body HTTP/1.1\r\nHost: t\r\n"

#: A request each, whose body the reader refuses midway: the app, like
#: Django or Flask, catches the error from wsgi.input.read().  Those in
#: ``BODY_ENDS_EARLY`` are only incomplete until the client shuts its
#: writing side after them, which the attack does.
BODY_ERRORS = {
    "negative chunk size": _POST + b"Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    "missing final CRLF": _POST + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n",
    "forbidden trailer": _POST + b"Transfer-Encoding: chunked\r\n\r\n"
                                 b"5\r\nhello\r\n0\r\nContent-Length: 5\r\n\r\n",
    "short body": _POST + b"Content-Length: 100\r\n\r\n" + b"x" * 10,
}
BODY_ENDS_EARLY = frozenset({"missing final CRLF", "short body"})

#: Chunk-size lines with whitespace before the CRLF (issue 12 item 11): RFC
#: 9112 section 7.1 allows none there.
# To a route that lets a body error through: the server answers it.
_POST_CLOSE = (b"POST /read-body HTTP/1.1\r\nHost: t\r\n"
               b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
CHUNK_SIZE_WHITESPACE = {
    "size": _POST_CLOSE + b"5 \r\nhello\r\n0\r\n\r\n",
    "last chunk": _POST_CLOSE + b"5\r\nhello\r\n0 \r\n\r\n",
    "tab": _POST_CLOSE + b"5\t\r\nhello\r\n0\r\n\r\n",
}


def pipelined(path: str, count: int) -> bytes:
    """``count`` GETs of ``path`` in one send."""
    return (f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n" * count).encode()


# -- availability ------------------------------------------------------------


@dataclass
class Availability:
    sent: int = 0
    answered: int = 0
    longest_gap: float = 0.0  # seconds without an answered probe
    failures: list = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.answered / self.sent if self.sent else 0.0

    def __str__(self) -> str:
        return (f"{self.answered}/{self.sent} answered ({100 * self.ratio:.0f}%), "
                f"longest gap {self.longest_gap:.1f}s")


class Prober:
    """Sends a GET of ``path`` every ``interval`` seconds, one at a time,
    each with ``timeout``; counts answers and the longest time without one.
    """

    def __init__(self, addr: Addr, path: str = "/", interval: float = 0.1,
                 timeout: float = 3.0, threads: int = 1) -> None:
        self.addr, self.path, self.interval, self.timeout = addr, path, interval, timeout
        self.result = Availability()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._last_ok = 0.0

    def __enter__(self) -> "Prober":
        self._last_ok = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> Availability:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 5)
        with self._lock:
            self._gap(time.monotonic())
        return self.result

    def _gap(self, now: float) -> None:
        self.result.longest_gap = max(self.result.longest_gap, now - self._last_ok)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                ok = get(self.addr, self.path, self.timeout)[0] == 200
                error = "" if ok else "status"
            except OSError as exc:
                ok, error = False, type(exc).__name__
            now = time.monotonic()
            with self._lock:
                self.result.sent += 1
                if ok:
                    self.result.answered += 1
                    self._gap(now)
                    self._last_ok = now
                else:
                    self.result.failures.append((round(now - start, 2), error))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - start)))


def every(interval: float, action: Callable[[], object], stop: threading.Event) -> threading.Thread:
    """Run ``action`` every ``interval`` seconds until ``stop`` (a thread)."""
    def run() -> None:
        while not stop.is_set():
            try:
                action()
            except OSError:
                pass
            stop.wait(interval)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


# -- slow clients ------------------------------------------------------------


class Trickler:
    """A request with a huge Content-Length whose body comes one byte every
    ``interval`` seconds (issue 12 item 4); the response, if any, is kept."""

    def __init__(self, addr: Addr, path: str = "/ignore-body",
                 length: int = 10 * 1024 ** 3, interval: float = 0.5) -> None:
        self.sock = connect(addr, 5.0)
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {length}\r\n\r\n"
                          .encode())
        self.interval = interval
        self.response = bytearray()
        self.closed_by_server = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.setblocking(False)
        while not self._stop.is_set():
            # Read first: a server that answers and closes may reset the
            # connection on the next byte sent, and a reset discards what
            # was not read yet.
            try:
                while True:
                    data = self.sock.recv(65536)
                    if not data:
                        self.closed_by_server = True
                        return
                    self.response += data
            except BlockingIOError:
                pass
            except OSError:
                self.closed_by_server = True
                return
            try:
                self.sock.send(b"x")
            except BlockingIOError:
                pass
            except OSError:
                self.closed_by_server = True
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


class Slowloris:
    """``count`` connections each sending a request head one header line
    every ``interval`` seconds, never finishing it."""

    def __init__(self, addr: Addr, count: int, interval: float = 1.0) -> None:
        self.socks: list[socket.socket] = []
        for _ in range(count):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(addr)
            except BlockingIOError:
                pass
            self.socks.append(s)
        self.interval = interval
        self._stop = threading.Event()
        self._n = 0
        self._send(b"GET / HTTP/1.1\r\nHost: t\r\n")
        self._thread = every(interval, self._tick, self._stop)

    def _send(self, data: bytes) -> None:
        for s in self.socks:
            try:
                s.send(data)
            except OSError:
                pass

    def _tick(self) -> None:
        self._n += 1
        self._send(b"X-%d: y\r\n" % self._n)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


def idle_flood(addr: Addr, count: int, deadline: float = 20.0) -> list[socket.socket]:
    """Open ``count`` connections that send nothing; return the ones that
    the kernel completed within ``deadline`` seconds (all, normally)."""
    pending: dict[int, socket.socket] = {}
    done: list[socket.socket] = []
    poller = select.epoll()
    for _ in range(count):
        s = socket.socket()
        s.setblocking(False)
        err = s.connect_ex(addr)
        if err in (0, errno.EINPROGRESS):
            pending[s.fileno()] = s
            poller.register(s.fileno(), select.EPOLLOUT)
        else:
            s.close()
    end = time.monotonic() + deadline
    while pending and time.monotonic() < end:
        for fd, _ in poller.poll(0.5):
            s = pending.pop(fd)
            poller.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                done.append(s)
            else:
                s.close()
    for s in pending.values():
        s.close()
    poller.close()
    return done


def raise_nofile(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards ``wanted``
    (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- WebSocket ---------------------------------------------------------------


def ws_upgrade(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def ws_frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0,
             mask: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, (0x80 if mask else 0) | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, n)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if n < 4096 else \
        _mask_fast(payload, key)
    return head + key + masked


def _mask_fast(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def ws_open(addr: Addr, path: str, timeout: float = 5.0) -> tuple[socket.socket, bytes]:
    """Complete a handshake; (socket, bytes read past the 101 head)."""
    s = connect(addr, timeout)
    s.sendall(ws_upgrade(path))
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = s.recv(4096)
        if not data:
            raise ConnectionError(f"closed during the handshake: {buf!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"no 101: {head!r}")
    return s, rest


def ws_close_code(sock: socket.socket, pending: bytes = b"") -> int | None:
    """Read server frames until a close frame (its code) or the end of the
    connection (None: closed with no close frame)."""
    buf = bytearray(pending)
    while True:
        while len(buf) >= 2:
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, offset = struct.unpack("!H", buf[2:4])[0], 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, offset = struct.unpack("!Q", buf[2:10])[0], 10
            if len(buf) < offset + length:
                break
            opcode = buf[0] & 0x0F
            payload = bytes(buf[offset:offset + length])
            del buf[:offset + length]
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            return None
        if not data:
            return None
        buf += data


def ws_flood_before_accept(addr: Addr, path: str, seconds: float,
                           cap: int = 512 << 20) -> int:
    """Send a WebSocket upgrade to an app that has not accepted yet, then
    push binary frames as fast as the server takes them for ``seconds``
    (at most ``cap`` bytes); how many bytes the server took."""
    s = connect(addr, 5.0)
    s.sendall(ws_upgrade(path))
    frame = ws_frame(0x2, b"\0" * (1 << 16))
    s.setblocking(False)
    sent = 0
    end = time.monotonic() + seconds
    view = memoryview(frame)
    try:
        while time.monotonic() < end and sent < cap:
            _, writable, _ = select.select([], [s], [], 0.2)
            if not writable:
                continue
            try:
                n = s.send(view)
            except BlockingIOError:
                continue
            except OSError:
                break
            sent += n
            view = view[n:] or memoryview(frame)
    finally:
        s.close()
    return sent


# -- memory ------------------------------------------------------------------


class RSSWatch:
    """Samples the RSS of ``pids()`` (re-evaluated each time: workers come
    and go) every ``interval`` seconds and keeps the peak of any one.  Past
    ``kill_above`` bytes the process is SIGKILLed at once, so that a test
    that fails does not take the machine's memory with it."""

    def __init__(self, pids: Callable[[], Iterable[int]], interval: float = 0.02,
                 kill_above: int | None = None) -> None:
        self.pids = pids
        self.interval = interval
        self.kill_above = kill_above
        self.peak = 0
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RSSWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in list(self.pids()):
                try:
                    rss = psutil.Process(pid).memory_info().rss
                except psutil.Error:
                    continue
                self.peak = max(self.peak, rss)
                if self.kill_above is not None and rss > self.kill_above:
                    try:
                        os.kill(pid, 9)
                        self.killed.append(pid)
                    except ProcessLookupError:
                        pass
            self._stop.wait(self.interval)

"""A small counting load generator for the chaos tests.

Threads send requests in a loop, over raw sockets, until stopped; every
request is counted as ok, failed, or retried.  The one retry allowed is the
one RFC 9112 section 9.3.1 expects of clients: a request sent on a reused
keep-alive connection that the server closed before sending a single byte
of a response (the server may close an idle connection at any time) is sent
again on a new connection.  Anything else (a reset mid-response, a 5xx, a
timeout, a refused connection) is a failure.

Clients can mix POSTs with a body into their GETs (``post_every``), and every
answered request's start time and latency is kept, for percentiles over the
window of a change.  Run as a script (``python tests/loadgen.py HOST PORT``),
it loads until its stdin closes and then prints its result as JSON: the
multi-host test bed (tests/netbed.py) runs it so inside a client namespace.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


class _Closed(Exception):
    """The connection closed before any response byte arrived."""


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, bytes, bool]:
    """Read one response with a Content-Length or chunked body; (status, body, close)."""
    got_any = bool(buf)
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            if not got_any:
                raise _Closed()
            raise ConnectionError("closed inside the response head")
        got_any = True
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower()] = v.strip()
    close = headers.get(b"connection", b"").lower() == b"close"
    if b"content-length" in headers:
        n = int(headers[b"content-length"])
        while len(buf) < n:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("closed inside the response body")
            buf += data
        body = bytes(buf[:n])
        del buf[:n]
        return status, body, close
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            while b"\r\n" not in buf:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed inside a chunk")
                buf += data
            line, _, rest = bytes(buf).partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(rest) < size + 2:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("closed inside a chunk")
                rest += data
            body += rest[:size]
            buf[:] = rest[size + 2:]
            if size == 0:
                return status, body, close
    # close-delimited
    while True:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    body = bytes(buf)
    buf.clear()
    return status, body, True


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    retried: int = 0
    errors: Counter = field(default_factory=Counter)
    bodies: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)  # (time, local address, error, timings...)
    #: (wall-clock start, seconds) of every answered request, and beside
    #: each the second word of its body (the answering host, for the bed)
    latencies: list = field(default_factory=list, repr=False)
    tags: list = field(default_factory=list, repr=False)
    posts: int = 0

    @property
    def requests(self) -> int:
        """Every request counted once: answered, failed (a retry is the
        same request again, not a new one)."""
        return self.ok + self.failed

    def percentile(self, q: float, since: float = 0.0, until: float = float("inf"),
                   tags: set[str] | None = None) -> float:
        """The ``q`` quantile (0..1) of the latencies of requests started in
        [since, until] (and tagged one of ``tags``), in seconds (0.0 if none)."""
        tagged = self.tags if len(self.tags) == len(self.latencies) else [""] * len(self.latencies)
        picked = sorted(d for (t, d), tag in zip(self.latencies, tagged)
                        if since <= t <= until and (tags is None or tag in tags))
        if not picked:
            return 0.0
        return picked[min(len(picked) - 1, int(q * len(picked)))]

    def to_json(self) -> dict:
        return {"ok": self.ok, "failed": self.failed, "retried": self.retried,
                "posts": self.posts, "errors": dict(self.errors),
                "bodies": {k.decode("latin-1"): v for k, v in self.bodies.items()},
                "failures": [list(map(str, f)) for f in self.failures],
                "latencies": self.latencies, "tags": self.tags}

    @classmethod
    def from_json(cls, data: dict) -> "LoadResult":
        result = cls(ok=data["ok"], failed=data["failed"], retried=data["retried"],
                     posts=data["posts"], errors=Counter(data["errors"]),
                     bodies=Counter({k.encode("latin-1"): v for k, v in data["bodies"].items()}),
                     failures=data["failures"])
        result.latencies = [tuple(x) for x in data["latencies"]]
        result.tags = data.get("tags", [])
        return result

    def __str__(self) -> str:
        return (f"ok={self.ok} failed={self.failed} retried={self.retried} "
                f"errors={dict(self.errors)}")


class Load:
    """Client threads hammering ``path`` until :meth:`stop`."""

    def __init__(self, connect, path: str = "/", keepalive: int = 2, fresh: int = 2,
                 slow_path: str | None = None, slow: int = 0, timeout: float = 30.0,
                 post_every: int = 0, post_body: bytes = b"x" * 1024) -> None:
        self.connect = connect
        # Every post_every-th request of a client is a POST of post_body (0: none).
        self.post_every = post_every
        self.post_body = post_body
        self.timeout = timeout
        self.result = LoadResult()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = []
        for _ in range(keepalive):
            self.threads.append(threading.Thread(target=self._run, args=(path, True), daemon=True))
        for _ in range(fresh):
            self.threads.append(threading.Thread(target=self._run, args=(path, False), daemon=True))
        for _ in range(slow):
            self.threads.append(threading.Thread(target=self._run, args=(slow_path, False), daemon=True))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self.stopping.set()
        for t in self.threads:
            t.join(self.timeout + 5)
        return self.result

    def _count(self, outcome: str, detail: str = "", body: bytes = b"",
               started: float = 0.0, took: float = 0.0) -> None:
        with self.lock:
            if outcome == "ok":
                self.result.ok += 1
                self.result.bodies[body[:40]] += 1
                self.result.latencies.append((started, took))
                words = body.split(b" ", 2)
                self.result.tags.append(words[1].decode("latin-1") if len(words) > 1 else "")
            elif outcome == "retry":
                self.result.retried += 1
            else:
                self.result.failed += 1
                self.result.errors[detail] += 1

    def _run(self, path: str, keepalive: bool) -> None:
        sock = None
        local = None
        buf = bytearray()
        reused = False
        connected = sent = 0.0
        close = "" if keepalive else "Connection: close\r\n"
        get = f"GET {path} HTTP/1.1\r\nHost: t\r\n{close}\r\n".encode()
        post = (f"POST {path} HTTP/1.1\r\nHost: t\r\n{close}Content-Length: "
                f"{len(self.post_body)}\r\n\r\n").encode() + self.post_body
        number = 0
        retrying = False

        def failed(detail: str, exc: BaseException) -> None:
            # When, on which connection, and how long after its connect and
            # the request it failed: enough to find it in the server's log.
            now = time.monotonic()
            self._count("fail", detail)
            with self.lock:
                self.result.failures.append(
                    (time.time(), local, type(exc).__name__, f"connect->send {sent - connected:.3f}s",
                     f"send->failure {now - sent:.3f}s", "reused" if reused else "new"))
        while not self.stopping.is_set():
            try:
                if sock is None:
                    local = None
                    connected = time.monotonic()
                    sock = self.connect(self.timeout)
                    local = sock.getsockname()
                    buf.clear()
                    reused = False
                if not retrying:
                    number += 1
                is_post = self.post_every > 0 and number % self.post_every == 0
                retrying = False
                sent = time.monotonic()
                started = time.time()
                sock.sendall(post if is_post else get)
                status, body, close = _read_response(sock, buf)
            except (_Closed, ConnectionResetError) as exc:
                sock.close()
                sock = None
                if isinstance(exc, ConnectionResetError) and buf:
                    failed("reset inside a response", exc)
                elif reused:
                    self._count("retry")
                    retrying = True
                else:
                    failed("closed before response on a new connection", exc)
                continue
            except (OSError, ValueError, IndexError) as exc:
                if sock is not None:
                    sock.close()
                sock = None
                failed(type(exc).__name__, exc)
                time.sleep(0.01)
                continue
            if status >= 500 or status < 200:
                self._count("fail", f"status {status}")
                with self.lock:
                    self.result.failures.append(
                        (started, local, f"status {status}", "POST" if is_post else "GET",
                         f"send->answer {time.monotonic() - sent:.3f}s",
                         "reused" if reused else "new"))
            else:
                self._count("ok", body=body, started=started, took=time.monotonic() - sent)
                if is_post:
                    with self.lock:
                        self.result.posts += 1
            if close or not keepalive:
                sock.close()
                sock = None
            else:
                reused = True
        if sock is not None:
            sock.close()


def main(argv: list[str]) -> None:
    """``loadgen.py HOST PORT [PATH [KEEPALIVE [FRESH [POST_EVERY]]]]``: load
    until stdin closes, then print the result as JSON."""
    host, port = argv[0], int(argv[1])
    path = argv[2] if len(argv) > 2 else "/"
    keepalive, fresh, post_every = (int(a) for a in (argv[3:6] + ["4", "2", "2"][len(argv[3:6]):]))

    def connect(timeout: float) -> socket.socket:
        return socket.create_connection((host, port), timeout=timeout)
    load = Load(connect, path, keepalive=keepalive, fresh=fresh, post_every=post_every,
                timeout=15.0)
    with load:
        print(json.dumps({"started": time.time()}), flush=True)
        sys.stdin.read()
    json.dump(load.result.to_json(), sys.stdout)
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Per-request CPU time of the workers, in-process, with no network noise.

Compares two source trees (e.g. an old commit's checkout and this one): each
measurement runs in a child process with ``PYTHONPATH=<tree>``, children of
the two trees interleaved, and the best (lowest) round of each is kept.

Scenarios, each the code path bench/run.py's wrk load goes through:

* ``asgi-hello``, ``asgi-post``: a real ASGIWorker connection (HTTPProtocol)
  on a real uvloop loop, fed through ``data_received()`` with a fake
  transport; ``CONNS`` connections each get a request, then the loop runs
  until every response is out (as with wrk -c64, one loop iteration serves
  many connections).  The POST's 16 KiB body comes in the same read as its
  head, as it does from a loopback socket.
* ``sync-hello``, ``sync-post``: SyncWorker._on_readable on a real TCP
  loopback connection, the client side written and read in the same
  thread (its syscalls are counted too, the same for both trees).
* ``sync-close``: a new connection per request through SyncWorker._accept,
  ``Connection: close``.

With ``INPROC_METRICS=1`` in the environment, workers run with
``metrics_bind`` set, so they update the shared-memory counters.

Usage::

    python bench/inproc.py OLD_TREE NEW_TREE [--scenarios a,b] [--runs 3]
    python bench/inproc.py --child TREE SCENARIO ROUNDS N   (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HELLO_REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n"
BODY = b"x" * 16384
POST_REQ = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Length: 16384\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + BODY)
CLOSE_REQ = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nConnection: close\r\n\r\n"
CONNS = 16
SCENARIOS = ("asgi-hello", "asgi-post", "sync-hello", "sync-post", "sync-close")
N = {"asgi-hello": 20000, "asgi-post": 10000, "sync-hello": 10000, "sync-post": 5000,
     "sync-close": 3000}


# -- child side ----------------------------------------------------------------

def _cfg():
    from forkserve.config import Config
    cfg = Config()
    cfg.set("lifespan", "off", "bench")
    if os.environ.get("INPROC_METRICS"):
        # Workers count for the master's /metrics only with metrics_bind
        # set (a tree that predates the setting measures without).
        try:
            cfg.set("metrics_bind", "127.0.0.1:9191", "bench")
        except Exception:
            pass
    return cfg


def _listener():
    import socket
    from forkserve.sockets import Listener
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    return Listener(lsock, None)


def _app(kind: str):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "apps"))
    mod = __import__(f"hello_{kind}")
    return mod.app if kind == "asgi" else mod.application


def asgi_rounds(scenario: str, rounds: int, n: int) -> list[float]:
    import asyncio
    from forkserve.heartbeat import Heartbeat
    from forkserve.workers.asgi import ASGIWorker
    try:
        from forkserve.workers.asgi_protocol import HTTPProtocol
    except ImportError:  # the tree before the split
        from forkserve.workers.asgi import HTTPProtocol

    class FakeTransport(asyncio.Transport):
        def __init__(self) -> None:
            super().__init__()
            self.writes = 0

        def write(self, data) -> None:
            self.writes += 1

        def get_extra_info(self, name, default=None):
            return {"peername": ("127.0.0.1", 5000),
                    "sockname": ("127.0.0.1", 8000)}.get(name, default)

        def is_closing(self) -> bool:
            return False

        def pause_reading(self) -> None:
            pass

        def resume_reading(self) -> None:
            pass

        def can_write_eof(self) -> bool:
            return True

        def write_eof(self) -> None:
            pass

        def close(self) -> None:
            raise AssertionError("closed")

    worker = ASGIWorker(1, os.getppid(), [_listener()], _cfg(), Heartbeat(), _app("asgi"))
    request = POST_REQ if scenario == "asgi-post" else HELLO_REQ
    pairs = []
    for _ in range(CONNS):
        proto = HTTPProtocol(worker)
        transport = FakeTransport()
        proto.connection_made(transport)
        pairs.append((proto, transport))

    async def run(count: int) -> float:
        sleep = asyncio.sleep
        batches = count // CONNS
        start = time.process_time()
        for _ in range(batches):
            for proto, _t in pairs:
                proto.data_received(request)
            # Until every response is out: one loop iteration without eager
            # task start (the apps run in it), none with it.
            while any(t.writes < want for (_p, t), want in zip(pairs, wants)):
                await sleep(0)
            for i in range(CONNS):
                wants[i] += 1
        return (time.process_time() - start) / (batches * CONNS)

    wants = [1] * CONNS
    out = []
    for _ in range(rounds):
        out.append(worker.loop.run_until_complete(run(n)))
        worker.loop.run_until_complete(asyncio.sleep(0))
    writes = sum(t.writes for _p, t in pairs)
    assert writes == sum(w - 1 for w in wants), (writes, wants)  # one write per response
    return out


def sync_rounds(scenario: str, rounds: int, n: int) -> list[float]:
    import inspect
    import socket
    from forkserve.heartbeat import Heartbeat
    from forkserve.http.request import RequestReader
    from forkserve.workers import sync

    lst = _listener()
    worker = sync.SyncWorker(1, os.getppid(), [lst], _cfg(), Heartbeat(), _app("wsgi"))
    new_conn = "policy" in inspect.signature(sync.Connection).parameters

    def connection(sock, peer):
        if new_conn:
            return sync.Connection(sock, peer, RequestReader(worker.limits), worker.policy,
                                   time.monotonic())
        conn = sync.Connection(sock, peer, RequestReader(worker.limits))
        conn.deadline = time.monotonic() + worker.cfg.header_timeout
        return conn

    if scenario == "sync-close":
        lsock = lst.sock
        lsock.setblocking(False)
        addr = lsock.getsockname()
        worker.selector.register(lsock, 1, object())  # as serve() does
        worker.accepting = True

        def one() -> None:
            c = socket.create_connection(addr)
            c.sendall(CLOSE_REQ)
            worker._accept(lsock)
            got = b""
            while True:
                data = c.recv(65536)
                if not data:
                    break
                got += data
            assert got.startswith(b"HTTP/1.1 200"), got
            c.close()
    else:
        client = socket.create_connection(lst.sock.getsockname())
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock, peer = lst.sock.accept()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = connection(sock, peer)
        worker.conns[sock.fileno()] = conn
        request = POST_REQ if scenario == "sync-post" else HELLO_REQ
        client.sendall(request)
        worker._on_readable(conn)
        sample = client.recv(65536)
        assert sample.startswith(b"HTTP/1.1 200"), sample
        size = len(sample)

        def one() -> None:
            client.sendall(request)
            worker._on_readable(conn)
            got = len(client.recv(65536))
            while got < size:
                got += len(client.recv(65536))

    out = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            one()
        out.append((time.process_time() - start) / n)
    return out


def child(tree: str, scenario: str, rounds: int, n: int) -> None:
    sys.path.insert(0, tree)
    import forkserve
    assert os.path.dirname(os.path.dirname(os.path.abspath(forkserve.__file__))) == \
        os.path.abspath(tree), forkserve.__file__
    run = asgi_rounds if scenario.startswith("asgi") else sync_rounds
    print(json.dumps(run(scenario, rounds, n)))


# -- parent side ---------------------------------------------------------------

def measure(tree: str, scenario: str, rounds: int, n: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=tree)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", tree, scenario,
                          str(rounds), str(n)], env=env, capture_output=True, text=True,
                         check=False, cwd=tree)
    if out.returncode:
        sys.exit(f"child failed for {tree} {scenario}:\n{out.stderr}")
    return json.loads(out.stdout)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="source trees to compare (repository roots)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--runs", type=int, default=3, help="child processes per tree, interleaved")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per child")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the request counts")
    args = ap.parse_args()
    trees = [os.path.abspath(t) for t in args.trees]
    print(f"Python {sys.version.split()[0]}; per request CPU time (best round), us")
    print(f"{'scenario':12s} " + " ".join(f"{os.path.basename(t) or t:>14s}" for t in trees))
    for scenario in args.scenarios.split(","):
        n = max(CONNS, int(N[scenario] * args.scale))
        best = {t: float("inf") for t in trees}
        for _ in range(args.runs):
            for t in trees:
                best[t] = min(best[t], min(measure(t, scenario, args.rounds, n)))
        base = best[trees[0]]
        cells = [f"{best[t] * 1e6:8.2f} {((best[t] - base) / base):+5.0%}" for t in trees]
        print(f"{scenario:12s} " + " ".join(f"{c:>14s}" for c in cells), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What eager task start saves per ASGI request, in-process.

A real ASGIWorker's connection (HTTPProtocol) on a real uvloop loop, fed
requests through data_received() with a fake transport that counts the
responses written; the app is a minimal ASGI hello.  Two measures, each
with eager start (3.12+) on and off:

* ping-pong: one connection, the next request as soon as the response is
  out; without eager start each request needs one more loop iteration
  (the app's task runs in it);
* batched: the loop runs once per request either way, so what is left is
  the cost of scheduling the task step.

Run with 3.12+ from the repository root:  python bench/asgi_eager.py
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from forkserve.config import Config  # noqa: E402
from forkserve.heartbeat import Heartbeat  # noqa: E402
from forkserve.sockets import Listener  # noqa: E402
from forkserve.workers import asgi_protocol  # noqa: E402
from forkserve.workers.asgi import ASGIWorker  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
N = 10000
ROUNDS = 15


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.responses = 0

    def write(self, data) -> None:
        self.responses += 1

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

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
        pass


def make_worker() -> ASGIWorker:
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    cfg = Config()
    cfg.set("lifespan", "off", "bench")
    return ASGIWorker(1, os.getppid(), [Listener(lsock, None)], cfg, Heartbeat(), hello)


async def ping_pong(proto, transport, n: int) -> float:
    start = time.process_time()
    for i in range(n):
        want = transport.responses + 1
        proto.data_received(REQUEST)
        while transport.responses < want:
            await asyncio.sleep(0)  # the task runs in this iteration
        if not i % 64:
            await asyncio.sleep(0)  # let done-callbacks run in either mode
    return (time.process_time() - start) / n


async def batched(proto, transport, n: int) -> float:
    start = time.process_time()
    for _ in range(n):
        proto.data_received(REQUEST)
        await asyncio.sleep(0)
    assert transport.responses >= n
    return (time.process_time() - start) / n


def measure(worker: ASGIWorker, how, eager: bool) -> float:
    asgi_protocol._EAGER = eager
    proto = asgi_protocol.HTTPProtocol(worker)
    transport = FakeTransport()
    proto.connection_made(transport)
    return worker.loop.run_until_complete(how(proto, transport, N))


def main() -> None:
    if sys.version_info < (3, 12):
        sys.exit("eager task start needs Python 3.12+")
    worker = make_worker()
    print(f"Python {sys.version.split()[0]}, {N} requests x {ROUNDS} rounds, per request "
          f"(CPU time, best round)")
    for how in (ping_pong, batched):
        results = {True: [], False: []}
        for _ in range(ROUNDS):
            for eager in (False, True):
                results[eager].append(measure(worker, how, eager))
        lazy = min(results[False]) * 1e6
        eager = min(results[True]) * 1e6
        print(f"  {how.__name__:10s} create_task {lazy:6.2f} us   eager {eager:6.2f} us   "
              f"saves {lazy - eager:5.2f} us ({(lazy - eager) / lazy:.0%})")


if __name__ == "__main__":
    main()

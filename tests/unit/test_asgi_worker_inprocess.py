"""The ASGI worker's accepting and draining, in-process: a real uvloop
loop and real loopback sockets, without forking, so that the order of
events at the start of a drain can be set exactly."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from forkserve.config import Config
from forkserve.heartbeat import Heartbeat
from forkserve.sockets import Listener
from forkserve.workers.asgi import ASGIWorker


async def hello(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@pytest.fixture
def worker():
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    cfg = Config()
    cfg.set("lifespan", "off", "test")
    w = ASGIWorker(1, os.getppid(), [Listener(lsock, None)], cfg, Heartbeat(), hello)
    w.stop_event = asyncio.Event()
    w.drained = asyncio.Event()
    lsock.setblocking(False)
    yield w
    if not w.loop.is_closed():
        w.loop.close()
    lsock.close()
    asyncio.set_event_loop(None)


def test_connection_accepted_just_before_the_drain_is_served(worker):
    """The drain begins after accept() but before the transport's
    connection_made: the connection is served all the same (it was lost,
    about once in 150k connections under HUPs, when the worker only knew
    of it from connection_made)."""
    lsock = worker.listeners[0].sock
    client = socket.create_connection(lsock.getsockname(), timeout=5)
    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")

    worker._accept(lsock)       # what the loop does when lsock is readable
    assert worker.connections   # connection_made has not run yet
    worker._on_term()           # TERM at this very moment
    # As serve() does: the drain, then the loop closes.
    worker.loop.run_until_complete(worker._run())
    worker.loop.close()
    client.settimeout(3)
    reply = client.recv(4096)
    client.close()
    assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello")
    assert b"connection: close" in reply

"""ASGI app for the hostile-load suite: the twin of hostile_wsgi.py, plus
WebSocket routes.  Plain ASGI 3, no forkserve import: uvicorn serves it too.
"""

import asyncio
import ctypes
import os
import time

VERSION = "v1"
IMPORT_DELAY = float(os.environ.get("HOSTILE_IMPORT_DELAY", "0"))
time.sleep(IMPORT_DELAY)

_hoard = []


async def _lifespan(receive, send):
    while True:
        msg = await receive()
        await send({"type": msg["type"] + ".complete"})
        if msg["type"] == "lifespan.shutdown":
            return


async def _websocket(scope, receive, send):
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    if scope["path"] == "/ws-wait":
        # An app that does slow work (auth, a database) before accepting.
        await asyncio.sleep(float(scope["query_string"] or b"5"))
    await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text") is not None:
            await send({"type": "websocket.send", "text": msg["text"]})
        else:
            await send({"type": "websocket.send", "bytes": msg["bytes"]})


async def _read_body(receive):
    """The body, or None if the client went away before it was complete."""
    body = bytearray()
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return bytes(body)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    path = scope["path"]
    qs = scope["query_string"].decode()
    status = 200
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/version":
        body = VERSION.encode()
    elif path == "/catch-body":
        data = await _read_body(receive)
        if data is None:
            status, body = 500, b"caught disconnect"
        else:
            body = b"read %d" % len(data)
    elif path == "/read-body":
        data = await _read_body(receive)
        body = b"read %d" % len(data or b"")
    elif path == "/ignore-body":
        body = b"ignored"
    elif path == "/sleep":
        await asyncio.sleep(float(qs or "1"))
        body = b"slept"
    elif path == "/segv":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
        body = b"unreachable"
    elif path == "/leak":
        _hoard.append(b"x" * (int(qs or "10") << 20))
        body = str(len(_hoard)).encode()
    else:
        body = b"ok"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

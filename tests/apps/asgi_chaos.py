"""ASGI app for the chaos tests (the twin of wsgi_chaos.py)."""

import asyncio
import os

VERSION = os.environ.get("CHAOS_VERSION_OVERRIDE", "v1")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/version":
        body = VERSION.encode()
    elif path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        body = b"slept"
    else:
        body = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

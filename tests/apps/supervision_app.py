"""App for the supervision tests (tests/e2e/test_supervision.py): WSGI
``application`` and ASGI ``app`` with the same routes.

/version  the VERSION below (the tests copy this file and change it)
/pid      the worker's PID
/segv     the worker kills itself with SIGSEGV, as a crashing C extension would
/leak     keeps 10 MB more for good (touched, so that it is resident)
/sleep?N  sleeps N seconds

Importing it sleeps for the number of seconds written in the file that
FS_SLOW_IMPORT names, if that file exists: a slow app import on demand.
The ASGI app's lifespan startup sleeps FS_SLOW_STARTUP seconds (if set).
"""

import asyncio
import os
import signal
import time

VERSION = "v1"
LEAK = 10 * 1024 * 1024

_flag = os.environ.get("FS_SLOW_IMPORT")
if _flag and os.path.exists(_flag):
    with open(_flag) as f:
        time.sleep(float(f.read() or "5"))

_hoard = []


def _route(path, qs):
    """(body, seconds to sleep) for a request; may not return."""
    if path == "/version":
        return VERSION.encode(), 0.0
    if path == "/pid":
        return str(os.getpid()).encode(), 0.0
    if path == "/segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    if path == "/leak":
        _hoard.append(b"\x01" * LEAK)
        return str(len(_hoard)).encode(), 0.0
    if path == "/sleep":
        return b"slept", float(qs or "1")
    return b"ok", 0.0


def application(environ, start_response):
    body, pause = _route(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    if pause:
        time.sleep(pause)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await asyncio.sleep(float(os.environ.get("FS_SLOW_STARTUP") or 0))
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    body, pause = _route(scope["path"], scope["query_string"].decode("latin-1"))
    if pause:
        await asyncio.sleep(pause)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

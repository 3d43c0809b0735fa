"""WSGI and ASGI apps that record every dispatched request line, so a test
can prove a request was never handed to the app."""

import os

LOG = os.environ.get("FS_RECORD", "/dev/null")
BIG = b"z" * (32 << 20)


def _record(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


def wsgi(environ, start_response):
    _record(f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}")
    if environ["PATH_INFO"] == "/big":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BIG)))])
        return [BIG]
    body = environ["wsgi.input"].read()
    out = b"ok %d" % len(body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                await send({"type": msg["type"] + ".complete"})
                if msg["type"] == "lifespan.shutdown":
                    return
        return
    _record(f"{scope['method']} {scope['path']}")
    if scope["path"] == "/big":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(BIG)).encode())]})
        await send({"type": "http.response.body", "body": BIG})
        return
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return
        size += len(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    out = b"ok %d" % size
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})

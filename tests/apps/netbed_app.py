"""The app every host of the multi-host test bed serves (tests/netbed.py).

Each answer names the code version and the host, so a client behind the
balancer sees which host answered and when a rolling deploy reached it: the
bed copies this file to a directory of each host's own and rewrites the
VERSION line to deploy new code.  ``application`` is WSGI, ``app`` ASGI.
"""

import os

VERSION = "v1"
HOST = os.environ.get("NETBED_HOST", "?")


def _answer(method: str, body_len: int) -> bytes:
    if method == "POST":
        return f"{VERSION} {HOST} posted {body_len}".encode()
    return f"{VERSION} {HOST}".encode()


def application(environ, start_response):
    length = environ.get("CONTENT_LENGTH") or "0"
    data = environ["wsgi.input"].read(int(length)) if length != "0" else b""
    body = _answer(environ["REQUEST_METHOD"], len(data))
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    size = 0
    more = True
    while more:
        msg = await receive()
        size += len(msg.get("body", b""))
        more = msg.get("more_body", False)
    body = _answer(scope["method"], size)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


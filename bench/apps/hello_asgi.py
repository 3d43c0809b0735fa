"""ASGI app for bench/run.py.

Any POST (any path) reads the whole request body and answers its length as
text; any other HTTP request answers 200 text/plain "Hello, world!" (13
bytes, with content-length).  Lifespan startup and shutdown are completed;
other scope types (websocket) are refused by returning.
"""

HELLO = b"Hello, world!"
_HELLO_START = {"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(HELLO)).encode())]}
_HELLO_BODY = {"type": "http.response.body", "body": HELLO}


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _post(receive, send):
    n = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        n += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(n).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    """The benchmark ASGI callable."""
    kind = scope["type"]
    if kind == "http":
        if scope["method"] == "POST":
            await _post(receive, send)
            return
        await send(_HELLO_START)
        await send(_HELLO_BODY)
    elif kind == "lifespan":
        await _lifespan(receive, send)

"""Apps for the wire and WebSocket fuzzers (and the limits comparison with
gunicorn): they read the whole request body and, like Django and Flask,
catch an error while reading it and answer 400 themselves.

``wsgi`` and ``asgi`` answer ``200 ok <method> <raw path> <body length>``,
so a fuzzer can tell which request was served; the ASGI app also echoes
WebSocket messages on any path.
"""

_BAD = b"bad request body"


def wsgi(environ, start_response):
    try:
        body = environ["wsgi.input"].read()
    except Exception:
        # A framework turns this into an error page and returns normally:
        # the server must cope with an app that caught the reader's error.
        start_response("400 Bad Request", [("Content-Type", "text/plain"),
                                           ("Content-Length", str(len(_BAD)))])
        return [_BAD]
    raw_path = environ["RAW_URI"].partition("?")[0]
    out = ("ok %s %s %d" % (environ["REQUEST_METHOD"], raw_path, len(body))).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


async def asgi(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if kind == "websocket":
        await _echo(receive, send)
        return
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            # The body could not be read; answer as a framework would.  On a
            # connection the server already refused, send() raises.
            await _respond(send, 400, _BAD)
            return
        size += len(msg.get("body", b""))
        if not msg.get("more_body", False):
            break
    out = b"ok %s %s %d" % (scope["method"].encode("latin-1"), scope["raw_path"], size)
    await _respond(send, 200, out)


async def _respond(send, status, body):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _echo(receive, send):
    msg = await receive()
    if msg["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text") is not None:
            await send({"type": "websocket.send", "text": msg["text"]})
        else:
            await send({"type": "websocket.send", "bytes": msg.get("bytes") or b""})

"""ASGI app for the gunicorn compatibility suite (uvicorn's workers under
gunicorn, forkserve's asgi worker): the same answers from both."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] not in ("/", "/scheme"):
        await send({"type": "http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    body = b"compat asgi ok" if scope["path"] == "/" else scope["scheme"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

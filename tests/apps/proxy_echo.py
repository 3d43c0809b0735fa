"""Apps that echo who the server says the client is: for the proxy-header
and PROXY protocol tests.  Both answer ``scheme client-address client-port
script-name``, one line."""


def wsgi(environ, start_response):
    body = " ".join([environ["wsgi.url_scheme"], environ.get("REMOTE_ADDR") or "-",
                     environ.get("REMOTE_PORT") or "-", environ.get("SCRIPT_NAME") or "-",
                     environ.get("HTTP_REMOTE_USER") or "-"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    client = scope.get("client") or ("-", "-")
    body = " ".join([scope["scheme"], str(client[0]), str(client[1]),
                     scope.get("root_path") or "-", "-"]).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

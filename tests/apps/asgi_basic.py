"""ASGI test app: small routes the e2e tests drive."""

import asyncio
import os
import time


async def _body(receive):
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(scope, receive, send):
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            if os.environ.get("ASGI_FAIL_STARTUP"):
                await send({"type": "lifespan.startup.failed", "message": "database is down"})
                return
            scope["state"]["started_at"] = "boot-" + str(os.getpid())
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            marker = os.environ.get("ASGI_SHUTDOWN_MARKER")
            if marker:
                with open(marker, "a") as f:
                    f.write(f"shutdown {os.getpid()}\n")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send, body, status=200, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), *headers]})
    await send({"type": "http.response.body", "body": body})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await _lifespan(scope, receive, send)
    if scope["type"] == "websocket":
        from asgi_ws import websocket_app
        return await websocket_app(scope, receive, send)
    # Behind a proxy that strips a prefix, path includes root_path.
    path = scope["path"][len(scope.get("root_path", "")):]
    if path == "/":
        return await _respond(send, b"hello")
    if path == "/pid":
        return await _respond(send, str(os.getpid()).encode())
    if path == "/echo":
        return await _respond(send, await _body(receive))
    if path == "/scope":
        s = {k: v for k, v in scope.items() if k not in ("headers", "state", "extensions")}
        s["state"] = scope.get("state")
        s["header_names"] = sorted({n.decode() for n, _ in scope["headers"]})
        return await _respond(send, repr(s).encode())
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"part%d;" % i, "more_body": True})
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        return await _respond(send, b"slept")
    if path == "/block":
        time.sleep(float(scope["query_string"] or b"60"))  # blocks the loop on purpose
        return await _respond(send, b"unblocked")
    if path == "/disconnect":
        msg = await receive()
        while msg["type"] != "http.disconnect":
            msg = await receive()
        marker = os.environ.get("ASGI_DISCONNECT_MARKER")
        if marker:
            with open(marker, "w") as f:
                f.write("disconnected")
        try:
            await _respond(send, b"too late")
        except OSError as exc:
            with open(marker + ".send", "w") as f:
                f.write(type(exc).__name__)
        return
    if path == "/error":
        raise RuntimeError("boom from the ASGI test app")
    if path == "/trailers":
        await send({"type": "http.response.start", "status": 200, "trailers": True,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"data", "more_body": False})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")]})
        return
    if path == "/pathsend":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/x-python")]})
        await send({"type": "http.response.pathsend", "path": os.path.abspath(__file__)})
        return
    if path == "/badheader":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-evil", b"a\r\nset-cookie: x=1")]})
        await send({"type": "http.response.body", "body": b"no"})
        return
    await _respond(send, b"not found", 404)

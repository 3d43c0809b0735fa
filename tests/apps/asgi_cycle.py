"""ASGI app for the request/response cycle tests: what receive() returns
when, flow control of request bodies, and apps that outlive their response.

Run with one worker: ``/record`` answers what earlier requests observed
(kept in this module, so in that worker)."""

import asyncio
import hashlib
import json
import os
import time

RECORD: dict = {}


async def _respond(send, body: bytes, status: int = 200) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive, delay: float = 0.0) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] != "http.request":
            raise ConnectionError(f"got {msg['type']} before the end of the body")
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body", False):
            return b"".join(chunks)
        if delay:
            await asyncio.sleep(delay)  # a slow consumer: the body backs up


async def _next_message(receive, timeout: float):
    try:
        return (await asyncio.wait_for(receive(), timeout))["type"]
    except asyncio.TimeoutError:
        return "nothing"


async def django_like(scope, receive, send):
    """What Django's ASGI handler does: read the whole body, then listen
    for a disconnect while the view runs.  Anything but http.disconnect
    from that listener is an error in Django."""
    key = scope["query_string"].decode() or "django"
    await _read_body(receive)
    seen = [await _next_message(receive, 0.3)]  # the view runs: nothing comes
    await _respond(send, b"done")
    seen.append(await _next_message(receive, 1.0))  # after the response
    seen.append(await _next_message(receive, 1.0))  # and again
    RECORD[key] = seen


async def sse_like(scope, receive, send):
    """Stream events while a second task loops on receive() until the
    client goes away (sse-starlette's EventSourceResponse does this)."""
    RECORD["sse"] = {"receives": 0, "disconnected": False}
    await _read_body(receive)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    done = asyncio.Event()

    async def listen():
        while True:
            msg = await receive()
            RECORD["sse"]["receives"] += 1
            if msg["type"] == "http.disconnect":
                RECORD["sse"]["disconnected"] = True
                done.set()
                return

    listener = asyncio.ensure_future(listen())
    n = 0
    try:
        while not done.is_set():
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % n,
                        "more_body": True})
            n += 1
            try:
                await asyncio.wait_for(done.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
    except OSError:
        pass  # the client went away while we sent
    finally:
        await asyncio.wait_for(listener, 5)


async def upload(scope, receive, send):
    delay = float(scope["query_string"] or b"0")
    body = await _read_body(receive, delay)
    await _respond(send, b"%d %s" % (len(body), hashlib.sha1(body).hexdigest().encode()))


async def background(scope, receive, send):
    """The response completes, then the app goes on (Starlette's
    BackgroundTask); what receive() gives it meanwhile is recorded."""
    await _read_body(receive)
    await _respond(send, b"background")
    RECORD["background"] = [await _next_message(receive, 0.5)]
    await asyncio.sleep(1.0)
    RECORD["background"].append("finished")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    path = scope["path"]
    if path == "/django":
        return await django_like(scope, receive, send)
    if path == "/sse":
        return await sse_like(scope, receive, send)
    if path == "/upload":
        return await upload(scope, receive, send)
    if path == "/background":
        return await background(scope, receive, send)
    if path == "/catch":  # the route the nginx HUP test drives (as wsgi_core's)
        return await _respond(send, b"read %d" % len(await _read_body(receive)))
    if path == "/record":
        return await _respond(send, json.dumps(RECORD).encode())
    if path == "/pid":
        return await _respond(send, str(os.getpid()).encode())
    if path == "/cookie":
        # Django's SimpleCookie output starts with a space.
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"set-cookie", b" sessionid=abc; Path=/"),
                                (b"x-pad", b"\tv\t "), (b"content-length", b" 6")]})
        return await send({"type": "http.response.body", "body": b"cookie"})
    if path == "/sleep":
        await asyncio.sleep(float(scope["query_string"] or b"1"))
        return await _respond(send, b"slept")
    if path == "/block":
        time.sleep(float(scope["query_string"] or b"1"))  # blocks the loop on purpose
        return await _respond(send, b"unblocked")
    return await _respond(send, b"hello")

"""ASGI app that plays a script of messages sent by the test: the request
body (HTTP) or the ``script`` query parameter (WebSocket) is a JSON list
of steps, and the app performs them in order, letting any error reach the
server.  A step is a message to ``send`` (``{"$b": "text"}`` stands for
the bytes ``b"text"``), or one of:

* ``"receive"``: call receive() and record the message's type (and code);
* ``"receive-all"``: receive until a disconnect, recording the number of
  messages and bytes;
* ``{"sleep": seconds}``;
* ``{"catch": step}``: perform ``step``, recording the exception it raises
  (its class name) instead of letting it out.

What was recorded is answered by ``GET /record?name`` (run one worker)."""

import asyncio
import json
import urllib.parse

RECORD: dict = {}


def _decode(obj):
    if isinstance(obj, dict):
        if set(obj) == {"$b"}:
            return obj["$b"].encode("latin-1")
        return {k: _decode(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v) for v in obj]
    return obj


async def _play(script, name, receive, send):
    seen = RECORD.setdefault(name, [])
    for step in script:
        if step == "receive":
            msg = await asyncio.wait_for(receive(), 10)
            seen.append(msg["type"] if "code" not in msg else f"{msg['type']} {msg['code']}")
        elif step == "receive-all":
            count = size = 0
            while True:
                msg = await receive()
                if msg["type"] in ("websocket.disconnect", "http.disconnect"):
                    break
                count += 1
                size += len(msg.get("bytes") or msg.get("text") or msg.get("body") or b"")
            seen.append(f"{count} messages {size} bytes")
        elif isinstance(step, dict) and "sleep" in step:
            await asyncio.sleep(step["sleep"])
        elif isinstance(step, dict) and "catch" in step:
            try:
                await _play([step["catch"]], name, receive, send)
            except Exception as exc:
                seen.append(type(exc).__name__)
            else:
                seen.append("no error")
        else:
            await send(step)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    query = urllib.parse.parse_qs(scope["query_string"].decode())
    if scope["type"] == "websocket":
        script = _decode(json.loads(query["script"][0]))
        assert (await receive())["type"] == "websocket.connect"
        return await _play(script, query.get("name", ["ws"])[0], receive, send)
    if scope["path"] == "/record":
        body = json.dumps(RECORD.get(scope["query_string"].decode(), [])).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    script = _decode(json.loads(b"".join(chunks) or b"[]"))
    await _play(script, scope["path"].strip("/") or "http", receive, send)

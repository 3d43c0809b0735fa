"""WebSocket routes for the ASGI test app (asgi_basic dispatches here)."""


async def websocket_app(scope, receive, send):
    path = scope["path"]
    msg = await receive()
    assert msg["type"] == "websocket.connect"
    if path == "/ws/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/ws/http-deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"no entry"})
        return
    sub = scope["subprotocols"][0] if scope["subprotocols"] else None
    await send({"type": "websocket.accept", "subprotocol": sub,
                "headers": [(b"x-ws-test", b"yes")]})
    if path == "/ws/scheme":
        await send({"type": "websocket.send", "text": scope["scheme"]})
    if path == "/ws/close-4001":
        await send({"type": "websocket.close", "code": 4001, "reason": "bye"})
        return
    while True:
        msg = await receive()
        if msg["type"] == "websocket.disconnect":
            return
        if msg.get("text") is not None:
            await send({"type": "websocket.send", "text": msg["text"]})
        else:
            await send({"type": "websocket.send", "bytes": msg["bytes"]})

"""A FastAPI app with what FastAPI apps do: JSON models, UploadFile,
BackgroundTasks, a middleware that asks ``request.is_disconnected()``,
server-sent events (sse-starlette), a WebSocket echo and lifespan state.

Counters live in the process: the tests run one worker per server."""

import asyncio
import hashlib
from contextlib import asynccontextmanager

from fastapi import BackgroundTasks, FastAPI, Form, Request, UploadFile, WebSocket
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from sse_starlette.sse import EventSourceResponse
from starlette.websockets import WebSocketDisconnect

COUNTS = {"background_done": 0, "sse_closed": 0, "cancelled_on_disconnect": 0}


@asynccontextmanager
async def lifespan(app):
    yield {"greeting": "set by lifespan", "answers": [42]}


app = FastAPI(lifespan=lifespan)


@app.middleware("http")
async def disconnect_probe(request: Request, call_next):
    """Middleware that asks ``request.is_disconnected()``: on /slow it stops
    the route's work when the client leaves (as cancellation middlewares
    do); elsewhere it reports, once the route answered, whether the client
    is gone.  (It never asks before a route has read the body: receive()
    would hand the body to the middleware instead.)"""
    if request.url.path == "/slow":
        work = asyncio.ensure_future(call_next(request))
        while not work.done():
            if await request.is_disconnected():
                work.cancel()
                COUNTS["cancelled_on_disconnect"] += 1
                return Response(status_code=499)
            await asyncio.wait([work], timeout=0.05)
        return work.result()
    response = await call_next(request)
    response.headers["x-client-gone"] = str(await request.is_disconnected()).lower()
    return response


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/ping")
async def ping():
    return {"pong": True}


@app.api_route("/scope/{rest:path}", methods=["GET", "POST"])
async def scope(request: Request, rest: str):
    """What the server put in the scope (the parts that are the same for
    any server on any port)."""
    s = request.scope
    return {"type": s["type"], "asgi": s["asgi"], "http_version": s["http_version"],
            "method": s["method"], "scheme": s["scheme"], "path": s["path"],
            "raw_path": s.get("raw_path", b"").decode("latin-1"), "root_path": s["root_path"],
            "query_string": s["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in s["headers"]],
            "client_host": (s.get("client") or [None])[0], "rest": rest,
            "body": (await request.body()).decode("latin-1")}


@app.get("/state")
async def state(request: Request):
    return {"greeting": request.state.greeting, "answers": request.state.answers}


@app.post("/items", status_code=201)
async def create_item(item: Item):
    return {"item": item.model_dump(), "total": item.price * 2}


@app.get("/items/{item_id}")
async def read_item(item_id: int, q: str | None = None):
    if item_id == 404:
        return JSONResponse({"detail": "no such item"}, status_code=404)
    return {"item_id": item_id, "q": q}


@app.post("/upload")
async def upload(file: UploadFile, note: str = Form("")):
    digest = hashlib.sha256()
    size = 0
    while chunk := await file.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": file.filename, "content_type": file.content_type, "size": size,
            "sha256": digest.hexdigest(), "note": note}


async def _slow_task(seconds: float) -> None:
    await asyncio.sleep(seconds)
    COUNTS["background_done"] += 1


@app.post("/background")
async def background(tasks: BackgroundTasks, seconds: float = 2.0):
    tasks.add_task(_slow_task, seconds)
    return {"queued": seconds}


@app.get("/counts")
async def counts():
    return COUNTS


@app.get("/slow")
async def slow(seconds: float):
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@app.get("/boom")
async def boom():
    raise RuntimeError("this route fails on purpose")


@app.get("/stream-fails")
async def stream_fails():
    """A streamed response whose generator raises half-way."""
    async def lines():
        for i in range(3):
            yield f"line {i}\n"
            await asyncio.sleep(0)
        raise RuntimeError("the generator fails on purpose")
    return StreamingResponse(lines(), media_type="text/plain")


@app.get("/sse")
async def sse(request: Request, n: int = 5, interval: float = 0.02):
    async def events():
        try:
            for i in range(n):
                yield {"event": "tick", "id": str(i), "data": f"tick {i}"}
                await asyncio.sleep(interval)
        finally:
            COUNTS["sse_closed"] += 1
    return EventSourceResponse(events(), ping=600)


@app.websocket("/ws")
async def ws_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") == "close":
                await websocket.close(code=4001, reason="asked to close")
                return
            if message.get("text") is not None:
                await websocket.send_text(f"echo: {message['text']}")
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        pass


@app.websocket("/ws-reject")
async def ws_reject(websocket: WebSocket):
    await websocket.close(code=1008)

"""A Starlette app with HTTP and WebSocket routes, run as users run it."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute


async def homepage(request):
    return JSONResponse({"hello": "world", "state": request.state.tag})


async def echo(request):
    body = await request.body()
    return PlainTextResponse(body.decode())


async def stream(request):
    async def gen():
        for i in range(3):
            yield f"chunk{i};"
    return StreamingResponse(gen(), media_type="text/plain")


async def ws_echo(websocket):
    await websocket.accept()
    async for text in websocket.iter_text():
        await websocket.send_text(f"starlette: {text}")


async def lifespan(app):
    yield {"tag": "from-lifespan"}


app = Starlette(routes=[Route("/", homepage), Route("/echo", echo, methods=["POST"]),
                        Route("/stream", stream), WebSocketRoute("/ws", ws_echo)],
                lifespan=lifespan)

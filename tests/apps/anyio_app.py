"""A Starlette app whose requests use anyio cancel scopes and task groups
(BaseHTTPMiddleware, move_on_after, request.is_disconnected(), background
tasks, sse-starlette): on Python 3.12+ the request task starts eagerly,
and these must all see it as the current task."""

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

STATE = {"background": 0}


class Mark(BaseHTTPMiddleware):
    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["x-middleware"] = str(await request.is_disconnected())
        return response


async def scopes(request):
    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(5)
    results = []

    async def child(i):
        await anyio.sleep(0.01 * i)
        results.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(child, i)
    return PlainTextResponse(f"cancelled={scope.cancelled_caught} children={results}")


async def upload(request):
    body = await request.body()

    async def later():
        await anyio.sleep(0.2)
        STATE["background"] += 1

    return PlainTextResponse(str(len(body)), background=BackgroundTask(later))


async def background_count(request):
    return PlainTextResponse(str(STATE["background"]))


async def events(request):
    async def gen():
        for i in range(3):
            yield {"data": f"event{i}"}
            await anyio.sleep(0.01)
    return EventSourceResponse(gen())


app = Starlette(routes=[Route("/scopes", scopes), Route("/upload", upload, methods=["POST"]),
                        Route("/background", background_count), Route("/events", events)],
                middleware=[Middleware(Mark)])

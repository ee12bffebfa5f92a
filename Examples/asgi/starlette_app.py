"""A Starlette app for `subinterp serve` (ASGI: an event loop in every worker interpreter).

    subinterp serve starlette_app:app --chdir Examples/asgi --workers 2

Routes: `/` (JSON, with what lifespan startup put in the state), `/hello/{name}` (text),
`/echo` (POST: the body back, read as a stream), `/stream` (a streamed response, one chunk per
line), `/slow?seconds=S` (awaits asyncio.sleep: many run at once on each worker), and `/ws`
(a WebSocket that echoes what it gets).
"""

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute


@contextlib.asynccontextmanager
async def lifespan(app):
    # Runs in every worker's loop before it serves; what it yields is each request's state.
    yield {"greeting": "hello from lifespan"}


async def index(request):
    return JSONResponse({"hello": "world", "framework": "starlette", "greeting": request.state.greeting})


async def hello(request):
    return PlainTextResponse(f"Hello, {request.path_params['name']}!\n")


async def echo(request):
    body = b""
    async for chunk in request.stream():
        body += chunk
    return Response(body, media_type=request.headers.get("content-type", "application/octet-stream"))


async def stream(request):
    count = int(request.query_params.get("count", "5"))

    async def lines():
        for i in range(count):
            yield f"line {i}\n"
            await asyncio.sleep(0)

    return StreamingResponse(lines(), media_type="text/plain")


async def slow(request):
    seconds = float(request.query_params.get("seconds", "1"))
    await asyncio.sleep(seconds)
    return PlainTextResponse(f"slept {seconds}\n")


async def websocket_echo(websocket):
    await websocket.accept()
    async for message in websocket.iter_text():
        await websocket.send_text(f"echo: {message}")


app = Starlette(
    routes=[
        Route("/", index),
        Route("/hello/{name}", hello),
        Route("/echo", echo, methods=["POST"]),
        Route("/stream", stream),
        Route("/slow", slow),
        WebSocketRoute("/ws", websocket_echo),
    ],
    lifespan=lifespan,
)

"""The ASGI apps every server in the serve suite runs (Benchmarks/serve/serve_bench.py).

    subinterp serve asgi_apps:app --chdir Benchmarks/serve
    uvicorn asgi_apps:app --workers 2                 (from Benchmarks/serve)
    granian --interface asgi asgi_apps:app
    hypercorn asgi_apps:app --workers 2

One Starlette app, so every workload is the same server start:
/           plain text "Hello, world!"
/json       a small JSON object (JSONResponse)
/stream     a 1 MiB streamed response: 16 chunks of 64 KiB from an async generator, no Content-Length
/ws         WebSocket echo: every message comes back as it came (text or bytes)
"""

from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute

CHUNK = b"x" * (64 * 1024)
CHUNKS = 16


async def plain(request):
    return PlainTextResponse("Hello, world!")


async def json_view(request):
    return JSONResponse({"message": "Hello, world!", "items": [1, 2, 3], "ok": True})


async def stream(request):
    async def body():
        for _ in range(CHUNKS):
            yield CHUNK

    return StreamingResponse(body(), media_type="application/octet-stream")


async def echo(websocket):
    await websocket.accept()
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await websocket.send_text(message["text"])
        else:
            await websocket.send_bytes(message["bytes"])


app = Starlette(routes=[
    Route("/", plain),
    Route("/json", json_view),
    Route("/stream", stream),
    WebSocketRoute("/ws", echo),
])

"""A Quart app for `subinterp serve` (Flask's API on asyncio).

    subinterp serve quart_app:app --chdir Examples/asgi --workers 2

Routes: `/` (JSON), `/echo` (POST: the body's length and JSON), `/ws` (a WebSocket that
echoes in upper case). Quart's startup hooks run through ASGI lifespan in every worker.
"""

from quart import Quart, jsonify, request, websocket

app = Quart(__name__)
STARTED = []


@app.before_serving
async def startup():
    STARTED.append(True)


@app.get("/")
async def index():
    return jsonify(hello="world", framework="quart", started=bool(STARTED))


@app.post("/echo")
async def echo():
    data = await request.get_data()
    return jsonify(length=len(data), json=await request.get_json(silent=True))


@app.websocket("/ws")
async def ws():
    while True:
        message = await websocket.receive()
        await websocket.send(message.upper())

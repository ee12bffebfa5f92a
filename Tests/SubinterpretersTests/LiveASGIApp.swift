/// The ASGI app the live tests serve (`liveasgi:app`, written next to `liveapp.py` by
/// `LiveServer`). It reports what it sees in its responses and, for what happens after a
/// response, in lines on stderr the tests wait for.
enum LiveASGIApp {
    static let source = #"""
        import asyncio, json, os, sys, time, uuid, subinterp

        TOKEN = uuid.uuid4().hex
        VERSION = open(os.path.join(os.path.dirname(__file__), "version.txt")).read().strip()
        STATE = {"started": 0, "finished": 0}
        KEPT = []
        HOLD = asyncio.Event()

        def log(text):
            print(text, file=sys.stderr, flush=True)

        def text(value):
            return value.decode("latin-1") if isinstance(value, bytes) else value

        async def respond(send, status, body, headers=()):
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"text/plain"), (b"x-token", TOKEN.encode()),
                                    (b"x-version", VERSION.encode()), *headers]})
            await send({"type": "http.response.body", "body": body})

        async def lifespan(receive, send):
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    if os.environ.get("LIVE_STARTUP_FAILS"):
                        await send({"type": "lifespan.startup.failed", "message": os.environ["LIVE_STARTUP_FAILS"]})
                        return
                    log(f"lifespan startup in worker {subinterp.worker_index()}")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    log(f"lifespan shutdown in worker {subinterp.worker_index()}")
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        async def websocket(scope, receive, send):
            assert (await receive())["type"] == "websocket.connect"
            path = scope["path"][len(scope["root_path"]):]
            if path == "/ws/deny":
                await send({"type": "websocket.close", "code": 1008})
                return
            if path == "/ws/crash-before-accept":
                raise RuntimeError("failed before accepting")
            if path == "/ws/hold":
                # Takes no message until GET /release: the client's messages pile up unread.
                await send({"type": "websocket.accept"})
                log("hold: accepted")
                await HOLD.wait()
                total = 0
                while True:
                    message = await receive()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("text") == "done":
                        await send({"type": "websocket.send", "text": str(total)})
                        continue
                    total += len(message.get("bytes") or b"")
            await send({"type": "websocket.accept",
                        "subprotocol": scope["subprotocols"][0] if scope["subprotocols"] else None,
                        "headers": [(b"x-ws-token", TOKEN.encode())]})
            if path == "/ws/scope":
                shown = {"path": scope["path"], "query": text(scope["query_string"]), "scheme": scope["scheme"],
                         "subprotocols": scope["subprotocols"], "http_version": scope["http_version"],
                         "headers": [[text(n), text(v)] for n, v in scope["headers"]]}
                await send({"type": "websocket.send", "text": json.dumps(shown)})
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    log(f"websocket disconnect {message['code']} {message.get('reason', '')!r}")
                    return
                data = message.get("text")
                if data == "close":
                    await send({"type": "websocket.close", "code": 4001, "reason": "closed by the app"})
                    continue
                if data == "crash":
                    raise RuntimeError("the websocket handler failed")
                if data is not None and data.startswith("burst "):
                    count = int(data.split()[1])
                    for i in range(count):
                        await send({"type": "websocket.send", "text": f"message {i}"})
                    continue
                if data is not None:
                    await send({"type": "websocket.send", "text": data})
                else:
                    await send({"type": "websocket.send", "bytes": message["bytes"]})

        async def app(scope, receive, send):
            if scope["type"] == "lifespan":
                return await lifespan(receive, send)
            if scope["type"] == "websocket":
                return await websocket(scope, receive, send)
            path = scope["path"][len(scope["root_path"]):]
            if path.startswith("/scope"):
                shown = {key: text(value) for key, value in scope.items()
                         if key not in ("headers", "state", "asgi", "client", "server", "extensions")}
                shown["headers"] = [[text(n), text(v)] for n, v in scope["headers"]]
                shown["types"] = {"raw_path": type(scope["raw_path"]).__name__, "query_string": type(scope["query_string"]).__name__,
                                  "header": [type(part).__name__ for part in scope["headers"][0]]}
                shown["client"] = list(scope["client"])
                shown["server"] = list(scope["server"])
                shown["asgi"] = scope["asgi"]
                await respond(send, 200, json.dumps(shown).encode(), [(b"content-type", b"application/json")])
            elif path == "/body":
                # Each http.request as it came: its size and more_body.
                log("body: started")
                parts = []
                digest = __import__("hashlib").sha256()
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        log(f"body: {message['type']}")
                        return
                    digest.update(message["body"])
                    parts.append([len(message["body"]), message["more_body"]])
                    if not message["more_body"]:
                        break
                await respond(send, 200, json.dumps({"parts": parts, "sha256": digest.hexdigest()}).encode())
            elif path == "/reject-unread":
                # Answers without reading the body (an Expect: 100-continue client never sends it).
                await respond(send, 401, b"no")
            elif path == "/big":
                size = int(scope["query_string"] or b"1048576")
                await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
                chunk = b"z" * 65536
                sent = 0
                while sent < size:
                    piece = chunk[:min(65536, size - sent)]
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
                    sent += len(piece)
                    if sent % (1 << 20) == 0:
                        log(f"big: sent {sent >> 20} MiB")
                await send({"type": "http.response.body", "body": b""})
                log("big: done")
            elif path == "/wait-disconnect":
                message = await receive()
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"waiting\n", "more_body": True})
                log("wait-disconnect: waiting")
                message = await receive()
                log(f"wait-disconnect: got {message['type']}")
            elif path == "/boom":
                raise ValueError("secret detail of the failure")
            elif path == "/boom-after-start":
                await send({"type": "http.response.start", "status": 200, "headers": []})
                await send({"type": "http.response.body", "body": b"partial", "more_body": True})
                raise ValueError("failed halfway")
            elif path == "/sleep":
                seconds = float(scope["query_string"] or b"1")
                index = STATE["started"]
                STATE["started"] += 1
                log(f"sleep started {index}")
                try:
                    await asyncio.sleep(seconds)
                except asyncio.CancelledError:
                    log("sleep cancelled")
                    raise
                started_then = STATE["started"]
                finished_before = STATE["finished"]
                STATE["finished"] += 1
                await respond(send, 200, json.dumps({"worker": subinterp.worker_index(), "started": started_then,
                                                     "finished_before": finished_before}).encode())
            elif path == "/spin":
                log("spin started")
                try:
                    while True:
                        pass
                except BaseException as error:
                    log(f"spin interrupted by {type(error).__name__}")
                    raise
            elif path == "/release":
                HOLD.set()
                await respond(send, 200, b"released")
            elif path == "/keep":
                # The request's receive() (and so the request) kept for the interpreter's life:
                # it is freed only as the interpreter ends, after its types are torn down.
                KEPT.append((receive, send))
                await respond(send, 200, b"kept")
            elif path == "/stop-loop":
                # sys.exit() from a task that has been suspended once: SystemExit leaves the loop.
                await asyncio.sleep(0)
                log("stopping the loop")
                sys.exit(3)
            else:
                await respond(send, 200, b"hello")
        """#
}

"""FastAPI needs pydantic-core, whose extension module refuses sub-interpreters today, so
`subinterp serve` (--isolation auto, the default) logs one warning naming it and serves the app
in worker processes instead, one event loop in each one's main interpreter:

    subinterp serve fastapi_app:app --chdir Examples/asgi --workers 2     # 2 worker processes
    subinterp serve fastapi_app:app --chdir Examples/asgi --isolation interpreters   # exits 1:
    subinterp: fastapi_app:app cannot run in a sub-interpreter: extension module 'pydantic_core._pydantic_core' ...
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def index():
    return {"hello": "world", "framework": "fastapi"}

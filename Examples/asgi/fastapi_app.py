"""FastAPI needs pydantic-core, whose extension module refuses sub-interpreters today, so
`subinterp serve` stops at startup with one line naming it:

    subinterp serve fastapi_app:app --chdir Examples/asgi
    subinterp: fastapi_app:app cannot run in a sub-interpreter: extension module 'pydantic_core._pydantic_core' ...

Running such apps in worker processes (process isolation) is what makes them serve.
"""

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def index():
    return {"hello": "world", "framework": "fastapi"}

"""The same app as ``peer_app.py``, written for Sanic (which serves its own apps)."""

import asyncio
import os

from peer_app import SLOW
from sanic import Sanic
from sanic.response import text

app = Sanic("peers")


@app.get("/")
async def index(request):
    pid = str(os.getpid())
    return text(pid, headers={"x-pid": pid})


@app.get("/sleep")
async def sleep(request):
    response = await request.respond(
        content_type="text/plain", headers={"x-pid": str(os.getpid())}
    )
    await response.send("waiting\n")
    await asyncio.sleep(SLOW)
    await response.send("slept")
    await response.eof()

"""The ASGI app that every server in ``benchmarks/peers.py`` serves.

``GET /`` answers with the worker's pid (in the body and an ``x-pid`` header).
``GET /sleep`` sends its headers and a first line at once, then the rest one
second later: a request that is visibly in flight while a server stops.
"""

import asyncio
import os

SLOW = 1.0  # seconds /sleep takes


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    pid = str(os.getpid()).encode()
    headers = [(b"content-type", b"text/plain"), (b"x-pid", pid)]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if scope["path"] == "/sleep":
        await send(
            {"type": "http.response.body", "body": b"waiting\n", "more_body": True}
        )
        await asyncio.sleep(SLOW)
        await send({"type": "http.response.body", "body": b"slept"})
    else:
        await send({"type": "http.response.body", "body": pid})

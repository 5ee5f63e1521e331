"""The built-in demo app served by ``runtime run`` with no target.

Every response names the worker process that answered, in the body and in the
``x-worker`` header, so a few requests show the load spread over the workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    worker = multiprocessing.current_process().name
    body = (
        json.dumps(
            {
                "message": "hello from runtime",
                "worker": worker,
                "pid": os.getpid(),
                "path": scope["path"],
            }
        ).encode()
        + b"\n"
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-worker", f"{worker} {os.getpid()}".encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

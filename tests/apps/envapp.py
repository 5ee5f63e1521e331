"""Answers each request with the worker's pid and the environment variables
systemd uses, so tests can see what a worker inherited."""

import json
import os

from runtime import Runtime

NAMES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = {"pid": os.getpid(), "env": {n: os.environ.get(n) for n in NAMES}}
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


rt = Runtime("envapp", app)


@rt.before_server_start
def maybe_fail(rt):
    if os.environ.get("ENVAPP_FAIL"):
        raise RuntimeError("ENVAPP_FAIL is set: refusing to start")

"""An app for health checks and pid files, set up from Python (rt.config and
run() arguments) by environment variables.

RT_START_METHOD     Runtime.start_method
RT_WORKERS          workers (default 1)
RT_INSPECT=1        the inspector on 127.0.0.1, a free port; RT_KEY its API key
RT_WITHOUT_KEY=1    run(health_without_key=True)
RT_HEALTH_PORT=N    rt.config.HEALTH_PORT (0: a free one), on 127.0.0.1
RT_HEALTH_HOST      run(health_host=...)
RT_SLOW_MAIN=S      main_process_start sleeps S seconds
RT_SLOW_START=S     before_server_start sleeps S seconds (each worker)
RT_PID_FILE         rt.config.PID_FILE
RT_PORT             the port (default 0, a free one)
RT_SINGLE=1         single-process mode
RT_CUSTOM=1         main_process_ready starts a custom process, Runtime-Side-0

GET /             {"worker", "pid", "uid", "gid"}
GET /?sleep=S     the same, S seconds later
"""

import asyncio
import json
import multiprocessing
import os
import time

from say import say

from runtime import Runtime

env = os.environ.get
if env("RT_START_METHOD"):
    Runtime.start_method = env("RT_START_METHOD")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = dict(
        p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p
    )
    if "sleep" in query:
        say("request sleeping")
        await asyncio.sleep(float(query["sleep"]))
    body = {
        "worker": multiprocessing.current_process().name,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "gid": os.getgid(),
    }
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def side():
    say(f"side running {os.getpid()}")
    while True:
        time.sleep(1)


rt = Runtime("probed", app=app)
rt.config.INSPECTOR = bool(env("RT_INSPECT"))
rt.config.INSPECTOR_HOST = "127.0.0.1"
rt.config.INSPECTOR_PORT = 0
rt.config.INSPECTOR_API_KEY = env("RT_KEY") or None
if env("RT_HEALTH_PORT"):
    rt.config.HEALTH_PORT = int(env("RT_HEALTH_PORT"))
rt.config.PID_FILE = env("RT_PID_FILE") or None


@rt.main_process_start
async def slow_main(rt):
    if env("RT_SLOW_MAIN"):
        say("main start sleeping")
        await asyncio.sleep(float(env("RT_SLOW_MAIN")))


@rt.before_server_start
async def slow_start(rt):
    if env("RT_SLOW_START"):
        await asyncio.sleep(float(env("RT_SLOW_START")))


@rt.main_process_ready
def start_side(rt):
    if env("RT_CUSTOM"):
        rt.manager.manage("Side", side)


if __name__ == "__main__":
    options = {}
    if env("RT_WITHOUT_KEY"):
        options["health_without_key"] = True
    if env("RT_HEALTH_HOST"):
        options["health_host"] = env("RT_HEALTH_HOST")
    rt.run(
        host="127.0.0.1",
        port=int(env("RT_PORT", "0")),
        workers=int(env("RT_WORKERS", "1")),
        single_process=bool(env("RT_SINGLE")) or None,
        **options,
    )

"""A test app whose behaviour is chosen by environment variables.

RT_GLOBAL_METHOD  call multiprocessing.set_start_method() with it first
RT_SKIP           call skip_start_method_setup()
RT_START_METHOD   Runtime.start_method
RT_THRESHOLD      ProcessGroup.THRESHOLD
RT_WORKERS        workers (default 2)
RT_HOST, RT_UDS   where to listen (default 127.0.0.1, port 0)
RT_SLOW_START     seconds before_server_start sleeps
RT_SLOW_MAIN      seconds main_process_start sleeps
RT_BLOCK_START    seconds before_server_start blocks its loop
RT_RAISE_IN       a listener event that raises
RT_GRACEFUL       graceful timeout
RT_SINGLE         single-process mode
RT_HANG_STOP      after_server_stop never returns
"""

import asyncio
import json
import multiprocessing
import os
import time

from say import say

from runtime import ProcessGroup, Runtime, skip_start_method_setup

env = os.environ.get

if env("RT_GLOBAL_METHOD") and __name__ == "__main__":
    multiprocessing.set_start_method(env("RT_GLOBAL_METHOD"))
if env("RT_SKIP"):
    skip_start_method_setup()
if env("RT_START_METHOD"):
    Runtime.start_method = env("RT_START_METHOD")
if env("RT_THRESHOLD"):
    ProcessGroup.THRESHOLD = int(env("RT_THRESHOLD"))


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    query = dict(
        part.split("=", 1) for part in scope["query_string"].decode().split("&") if part
    )
    if "sleep" in query:
        say("request sleeping")
        await asyncio.sleep(float(query["sleep"]))
    body = json.dumps(
        {
            "worker": multiprocessing.current_process().name,
            "pid": os.getpid(),
            "method": multiprocessing.get_start_method(allow_none=True),
            "listeners": rt.ctx_log,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


rt = Runtime("basic", app=app)
rt.ctx_log = []


def _listener(event):
    async def listener(runtime):
        runtime.ctx_log.append(event)
        if event == "before_server_start" and env("RT_BLOCK_START"):
            time.sleep(float(env("RT_BLOCK_START")))  # blocks the loop
        if event == "before_server_start" and env("RT_SLOW_START"):
            await asyncio.sleep(float(env("RT_SLOW_START")))
        if event == "main_process_start" and env("RT_SLOW_MAIN"):
            say("main start sleeping")
            await asyncio.sleep(float(env("RT_SLOW_MAIN")))
        if env("RT_RAISE_IN") == event:
            raise RuntimeError(f"boom in {event}")
        if event == "after_server_stop" and env("RT_HANG_STOP"):
            time.sleep(1000)  # blocks the worker's loop: it will not exit
        if event == "main_process_ready" and not env("RT_SINGLE"):
            say("workers " + json.dumps(runtime.manager.workers, default=str))
        if event.startswith("main"):
            say(f"listener {event}")

    return listener


for _event in (
    "main_process_start",
    "main_process_ready",
    "main_process_stop",
    "before_server_start",
    "after_server_start",
    "before_server_stop",
    "after_server_stop",
):
    rt.listeners.add(_event, _listener(_event))


if __name__ == "__main__":
    options = {}
    if env("RT_UDS"):
        options["uds"] = env("RT_UDS")
    else:
        options["host"] = env("RT_HOST", "127.0.0.1")
        options["port"] = 0
    if env("RT_GRACEFUL"):
        options["graceful_timeout"] = float(env("RT_GRACEFUL"))
    rt.run(
        workers=int(env("RT_WORKERS", "2")),
        single_process=bool(env("RT_SINGLE")),
        **options,
    )

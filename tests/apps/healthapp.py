"""A test app for worker health; run it with ``runtime run healthapp:rt``.

GET /                   {"worker", "pid"}
GET /block?seconds=N    time.sleep(N) in the handler: the worker's loop is blocked
GET /cpu?seconds=N      busy CPU work for N seconds in the handler
GET /grow?mb=N          keep N more MiB allocated in this worker

RT_BOOT_CPU=N   before_server_start does N seconds of CPU-bound work
RT_CUSTOM=1     main_process_ready starts a custom process, Runtime-Side-0
RT_SLOW_ACK=N   after_server_start sleeps N seconds (serving, not yet acked)
RT_CRASH_LIMIT=N  CRASH_LOOP_LIMIT
"""

import asyncio
import json
import multiprocessing
import os
import time

from runtime import Runtime

env = os.environ.get
kept = []


def busy(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sum(range(1000))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = dict(
        p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p
    )
    if scope["path"] == "/block":
        time.sleep(float(query["seconds"]))
    elif scope["path"] == "/cpu":
        busy(float(query["seconds"]))
    elif scope["path"] == "/grow":
        kept.append(bytearray(int(query["mb"]) * 1024 * 1024))
    body = {"worker": multiprocessing.current_process().name, "pid": os.getpid()}
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


def side():
    print("side running", flush=True)
    while True:
        time.sleep(1)


rt = Runtime("healthapp", app=app)
if env("RT_CRASH_LIMIT"):
    rt.config.CRASH_LOOP_LIMIT = int(env("RT_CRASH_LIMIT"))


@rt.before_server_start
def boot(rt):
    if env("RT_BOOT_CPU"):
        busy(float(env("RT_BOOT_CPU")))


@rt.after_server_start
async def slow_ack(rt):
    if env("RT_SLOW_ACK"):
        await asyncio.sleep(float(env("RT_SLOW_ACK")))


@rt.main_process_ready
def start_side(rt):
    if env("RT_CUSTOM"):
        rt.manager.manage("Side", side)

"""A test app that drives the group through rt.m over HTTP.

GET /                      {"worker", "pid"}
GET /m                     rt.m's name, pid, state and workers
GET /m/restart?names=&all=1&zd=1
GET /m/scale?n=3
GET /m/set?key=value       set a user key of this worker's state entry
GET /m/terminate
GET /exit?code=0           this worker exits with that code right after answering

RT_START_METHOD, RT_WORKERS (default 2), RT_THRESHOLD, RT_GRACEFUL as in basic.py;
RT_CRASH_AFTER_ACK   every worker exits 3 shortly after it acked
RT_CRASH_LIMIT       rt.config.CRASH_LOOP_LIMIT
RT_HANG_LATER        workers after the first generation never finish starting
RT_HANG_STOP         after_server_stop never returns
RT_STORM=N,SECONDS   a main-process thread restarts all workers N times
"""

import asyncio
import json
import multiprocessing
import os
import threading
import time

from say import say

from runtime import ProcessGroup, Runtime

env = os.environ.get
if env("RT_START_METHOD"):
    Runtime.start_method = env("RT_START_METHOD")
if env("RT_THRESHOLD"):
    ProcessGroup.THRESHOLD = int(env("RT_THRESHOLD"))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = dict(
        p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p
    )
    status, body = 200, {}
    try:
        body = _route(scope["path"], query)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        status, body = 400, {"error": f"{type(exc).__name__}: {exc}"}
    data = json.dumps(body, default=str).encode()
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": data})


def _route(path, query):
    m = rt.m
    if path == "/m":
        state = dict(m.state)
        return {"name": m.name, "pid": m.pid, "state": state, "workers": m.workers}
    if path == "/m/restart":
        flags = {"1": True, "": False}
        m.restart(
            query.get("names"),
            all_workers=flags.get(query.get("all", ""), query.get("all")),
            zero_downtime=flags.get(query.get("zd", ""), query.get("zd")),
        )
    elif path == "/m/scale":
        n = query["n"]
        m.scale(int(n) if n.lstrip("-").isdigit() else n)
    elif path == "/m/set":
        for key, value in query.items():
            m.state[key] = value
    elif path == "/m/big":
        m.state["big"] = "a" * int(query["size"])
    elif path == "/m/many":
        for i in range(int(query["n"])):
            m.state["i"] = i
    elif path == "/m/unpicklable":
        m.state["fn"] = lambda: None
    elif path == "/m/manager":
        return {"manager": repr(rt.manager)}
    elif path == "/m/terminate":
        m.terminate()
    elif path == "/exit":
        asyncio.get_running_loop().call_later(0.05, os._exit, int(query["code"]))
    return {"worker": multiprocessing.current_process().name, "pid": os.getpid()}


rt = Runtime("control", app=app)
if env("RT_CRASH_LIMIT"):
    rt.config.CRASH_LOOP_LIMIT = int(env("RT_CRASH_LIMIT"))


@rt.before_server_start
async def maybe_hang(runtime):
    first = multiprocessing.current_process().name.endswith("-0")
    if env("RT_HANG_LATER") and not first:
        await asyncio.sleep(1000)


@rt.after_server_start
def maybe_crash(runtime):
    if env("RT_CRASH_AFTER_ACK"):
        asyncio.get_running_loop().call_later(0.3, os._exit, 3)


@rt.after_server_stop
def maybe_hang_at_stop(runtime):
    if env("RT_HANG_STOP"):
        time.sleep(1000)


@rt.main_process_ready
def storm(runtime):
    if not env("RT_STORM"):
        return
    count, every = env("RT_STORM").split(",")

    def restarts():
        for _ in range(int(count)):
            time.sleep(float(every))
            runtime.manager.restart(all_workers=True, zero_downtime=True)
        say("storm done")

    threading.Thread(target=restarts, daemon=True).start()


if __name__ == "__main__":
    options = {}
    if env("RT_GRACEFUL"):
        options["graceful_timeout"] = float(env("RT_GRACEFUL"))
    rt.run(host="127.0.0.1", port=0, workers=int(env("RT_WORKERS", "2")), **options)

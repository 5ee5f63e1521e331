"""Custom processes beside the server workers.

RT_CUSTOM is a comma-separated list of NAME:KIND[:flag...] registered in
main_process_ready, with flags transient, restartable, fixed (restartable=False),
untracked, manual (no auto_start) and workers2. KINDs:

ticker   counts on the shared Value until stopped; says "ticker stopped" on SIGTERM
once     returns at once (COMPLETED)
logs     logs one warning and returns
fail     raises (FAILED, exit code 1)
stubborn ignores SIGTERM (killed after the graceful timeout)
parent   starts a child process of its own and waits for it
abandon  starts a child process and exits without it
hardy    ignores SIGTERM and runs a `sleep` child

RT_EARLY=1   main_process_start starts a custom process, then raises
atick    an async def that counts until stopped

GET /m                      rt.m's view of the table
GET /count                  the shared Value
GET /m/restart?names=&all=1
GET /manage?name=&kind=&flags=   rt.m.manage(...) from this handler, awaited
"""

import asyncio
import json
import logging
import multiprocessing
import os
import signal
import subprocess
import time

from say import say

from runtime import Runtime
from runtime.errors import RequestRefused

env = os.environ.get
if env("RT_START_METHOD"):
    Runtime.start_method = env("RT_START_METHOD")


def ticker(count):
    try:
        while True:
            with count.get_lock():
                count.value += 1
            time.sleep(0.02)
    except KeyboardInterrupt:
        say("ticker stopped")


def once():
    say("once ran")


def logs():
    logging.getLogger("custom").warning("a custom process logs")


def fail():
    raise ValueError("custom process failed on purpose")


def stubborn():
    while True:
        try:
            say("stubborn running")
            time.sleep(1000)
        except KeyboardInterrupt:
            say("stubborn ignores the stop")


def _sleep_forever():
    time.sleep(1000)


def parent():
    child = multiprocessing.get_context("spawn").Process(target=_sleep_forever)
    child.start()
    try:
        say(f"parent started child {child.pid}")
        child.join()
    except KeyboardInterrupt:
        child.terminate()
        child.join()


def abandon():
    child = multiprocessing.get_context("fork").Process(target=_sleep_forever)
    child.daemon = False
    child.start()
    say(f"abandoned child {child.pid}")
    os._exit(0)  # leave it behind


def hardy():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(["sleep", "1000"])
    say(f"hardy started child {child.pid}")
    while True:
        time.sleep(1000)


async def atick(count):
    while True:
        with count.get_lock():
            count.value += 1
        await asyncio.sleep(0.02)


KINDS = {
    "ticker": ticker,
    "once": once,
    "logs": logs,
    "fail": fail,
    "stubborn": stubborn,
    "parent": parent,
    "atick": atick,
    "abandon": abandon,
    "hardy": hardy,
}


def _options(flags):
    return {
        "transient": "transient" in flags,
        "restartable": {"restartable": True, "fixed": False}.get(
            next((f for f in flags if f in ("restartable", "fixed")), ""), None
        ),
        "tracked": "untracked" not in flags,
        "auto_start": "manual" not in flags,
        "workers": 2 if "workers2" in flags else 1,
    }


def _kwargs(kind):
    return {"count": rt.shared_ctx.count} if kind in ("ticker", "atick") else {}


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = dict(
        p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p
    )
    status, body = 200, {}
    try:
        body = await _route(scope["path"], query)
    except (ValueError, RequestRefused) as exc:
        status, body = 400, {"error": f"{type(exc).__name__}: {exc}"}
    data = json.dumps(body, default=str).encode()
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": data})


async def _route(path, query):
    if path == "/m":
        return rt.m.workers
    if path == "/count":
        return rt.shared_ctx.count.value
    if path == "/m/restart":
        await rt.m.restart(query.get("names") or None, all_workers="all" in query)
    elif path == "/manage":
        kind, flags = query["kind"], query.get("flags", "").split("+")
        await rt.m.manage(query["name"], KINDS[kind], _kwargs(kind), **_options(flags))
    return {"ok": True}


rt = Runtime("custom", app=app)
rt.config.GRACEFUL_TIMEOUT = float(env("RT_GRACEFUL", "2"))


@rt.main_process_start
def attach(runtime):
    runtime.shared_ctx.count = runtime.context.Value("i", 0)
    if env("RT_EARLY"):
        runtime.manager.manage("Early", ticker, {"count": runtime.shared_ctx.count})
        raise RuntimeError("start-up fails after a custom process started")


@rt.main_process_ready
def register(runtime):
    for item in filter(None, env("RT_CUSTOM", "").split(",")):
        name, kind, *flags = item.split(":")
        if kind == "lambda":
            runtime.manager.manage(name, lambda: None)
            continue
        runtime.manager.manage(name, KINDS[kind], _kwargs(kind), **_options(flags))


if __name__ == "__main__":
    rt.run(host="127.0.0.1", port=0, workers=int(env("RT_WORKERS", "2")))

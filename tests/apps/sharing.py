"""shared_ctx across workers: a Queue, an Event, a Value and a Lock.

GET /put?item=x    put x on the shared queue
GET /get           get one item from the shared queue (5 s timeout)
GET /count         add one to the shared Value under the shared Lock; its value
GET /event         whether the shared Event is set; sets it
GET /plain         the plain objects as this worker sees them
RT_PLAIN=1         also attach a dict and an int (not shared: warned about)
RT_LATE=1          try to attach in before_server_start (refused)
"""

import json
import os

from runtime import Runtime

env = os.environ.get
if env("RT_START_METHOD"):
    Runtime.start_method = env("RT_START_METHOD")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    shared, path = rt.shared_ctx, scope["path"]
    query = scope["query_string"].decode()
    if path == "/put":
        shared.queue.put(query.split("=", 1)[1])
        body = "ok"
    elif path == "/get":
        body = shared.queue.get(timeout=5)
    elif path == "/count":
        with shared.lock:
            shared.count.value += 1
            body = str(shared.count.value)
    elif path == "/event":
        body = str(shared.event.is_set())
        shared.event.set()
    else:
        body = json.dumps({"settings": shared.settings, "number": shared.number})
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body.encode()})


rt = Runtime("sharing", app=app)


@rt.main_process_start
def attach(runtime):
    ctx = runtime.context
    runtime.shared_ctx.queue = ctx.Queue()
    runtime.shared_ctx.event = ctx.Event()
    runtime.shared_ctx.count = ctx.Value("i", 0, lock=False)
    runtime.shared_ctx.lock = ctx.Lock()
    if env("RT_PLAIN"):
        runtime.shared_ctx.settings = {"a": 1}
        runtime.shared_ctx.number = 7
        runtime.shared_ctx.mixed = (runtime.shared_ctx.lock, 3)
        runtime.shared_ctx.locks = (runtime.shared_ctx.lock, runtime.shared_ctx.event)


@rt.before_server_start
def late(runtime):
    if env("RT_LATE"):
        runtime.shared_ctx.late = 1


@rt.main_process_ready
def too_late(runtime):
    try:
        runtime.shared_ctx.later = 1
    except RuntimeError as exc:
        print(f"refused: {exc}", flush=True)


if __name__ == "__main__":
    rt.run(
        host="127.0.0.1",
        port=0,
        workers=int(env("RT_WORKERS", "2")),
        single_process=bool(env("RT_SINGLE")),
    )

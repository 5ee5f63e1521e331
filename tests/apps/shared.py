"""shared_ctx objects of different kinds (RT_SHARED), for start-method checks.

lambda      a lambda, which no spawn child can receive
fork_queue  multiprocessing.Queue() built from the global context (fork)
ctx_queue   rt.context.Queue()
"""

import multiprocessing
import os

from say import say

from runtime import Runtime
from runtime.demo import app

kind = os.environ["RT_SHARED"]
if kind == "fork_queue" and __name__ == "__main__":
    multiprocessing.set_start_method("fork")
Runtime.start_method = os.environ.get("RT_START_METHOD", "spawn")
rt = Runtime("shared", app=app)


@rt.main_process_start
def attach(runtime):
    if kind == "lambda":
        runtime.shared_ctx.fn = lambda: None
    elif kind == "fork_queue":
        runtime.shared_ctx.queue = multiprocessing.Queue()
    else:
        runtime.shared_ctx.queue = runtime.context.Queue()


@rt.after_server_start
def put(runtime):
    runtime.shared_ctx.queue.put(multiprocessing.current_process().name)


@rt.main_process_ready
def got(runtime):
    names = sorted(runtime.shared_ctx.queue.get(timeout=10) for _ in range(2))
    say("queue got " + " ".join(names))


if __name__ == "__main__":
    rt.run(host="127.0.0.1", port=0, workers=2)

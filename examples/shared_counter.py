"""Shared context: one counter every worker increments.

python examples/shared_counter.py # then: curl http://127.0.0.1:8082/
"""

import os

from runtime import Runtime


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    hits = rt.shared_ctx.hits
    with hits.get_lock():
        hits.value += 1
        count = hits.value
    body = f"{count} requests so far, across all workers\n".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


rt = Runtime("counter", app=app)


@rt.main_process_start
def attach(rt):
    rt.shared_ctx.hits = rt.context.Value("i", 0)


if __name__ == "__main__":
    rt.run(port=int(os.environ.get("PORT", 8082)), workers=2)

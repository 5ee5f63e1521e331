"""A worker steering its group through rt.m, the multiplexer.

python examples/restart_and_scale.py
curl -X POST 'http://127.0.0.1:8086/scale?n=3'   # three workers from now on
curl -X POST http://127.0.0.1:8086/restart       # every worker, without downtime
curl http://127.0.0.1:8086/                      # the worker that answered
"""

import os
from urllib.parse import parse_qs

from runtime import RequestRefused, Runtime


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    status, text = 200, rt.m.name
    try:
        if scope["path"] == "/scale" and scope["method"] == "POST":
            query = parse_qs(scope["query_string"].decode())
            await rt.m.scale(int(query["n"][0]))  # ValueError for n < 1
            text = "scaling"
        elif scope["path"] == "/restart" and scope["method"] == "POST":
            await rt.m.restart(all_workers=True, zero_downtime=True)
            text = "restarting"
    except (KeyError, ValueError, RequestRefused) as exc:  # refused by the manager
        status, text = 400, f"refused: {exc}"
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": f"{text}\n".encode()})


rt = Runtime("steer", app=app)

if __name__ == "__main__":
    rt.run(port=int(os.environ.get("PORT", 8086)), workers=2)

# hello.py: an ASGI app on two worker processes.
#     python examples/hello.py    then: curl http://127.0.0.1:8080/
import os

from runtime import Runtime


async def app(scope, receive, send):
    # any ASGI 3 app works the same: Starlette, FastAPI, Django's ASGI handler...
    if scope["type"] != "http":
        return
    body = f"{rt.greeting} from {rt.m.name}\n".encode()  # rt.m: the worker
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


rt = Runtime("hello", app=app)


@rt.before_server_start
async def connect(rt):
    # runs in every worker before it accepts connections: open pools here
    rt.greeting = "hello"


if __name__ == "__main__":
    rt.run(host="127.0.0.1", port=int(os.environ.get("PORT", 8080)), workers=2)

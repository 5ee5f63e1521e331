"""An ASGI app using lifespan state, HTTP and a websocket echo."""

import multiprocessing

from say import say

from runtime import Runtime


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["worker"] = multiprocessing.current_process().name
                await send({"type": "lifespan.startup.complete"})
            else:
                say("lifespan shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo " + message["text"]})
    else:
        body = scope["state"]["worker"].encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


rt = Runtime("asgi-full", app=app)

if __name__ == "__main__":
    rt.run(host="127.0.0.1", port=0, workers=2)

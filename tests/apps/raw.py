"""Non-HTTP servers: a raw asyncio Protocol factory (RT_KIND=protocol) or an
``async def serve(sock)`` callable (RT_KIND=serve). Each answers a line with
"pong <worker name>"."""

import asyncio
import multiprocessing
import os

from runtime import Runtime

NAME = multiprocessing.current_process().name


class Pong(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(
            f"pong {multiprocessing.current_process().name}\n".encode()
        )
        self.transport.close()


async def serve(sock):
    async def handle(reader, writer):
        await reader.readline()
        writer.write(f"pong {multiprocessing.current_process().name}\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, sock=sock)
    async with server:
        await server.serve_forever()


if os.environ.get("RT_KIND") == "serve":
    rt = Runtime("raw", serve=serve)
else:
    rt = Runtime("raw", protocol=Pong)

if __name__ == "__main__":
    rt.run(host="127.0.0.1", port=0, workers=2)

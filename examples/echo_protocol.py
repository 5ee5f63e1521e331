"""A raw asyncio server: a line echo protocol on two worker processes.

python examples/echo_protocol.py  # then: echo hi | nc 127.0.0.1 8081
"""

import asyncio
import os

from runtime import Runtime


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


rt = Runtime("echo", protocol=Echo)

if __name__ == "__main__":
    rt.run(port=int(os.environ.get("PORT", 8081)), workers=2)

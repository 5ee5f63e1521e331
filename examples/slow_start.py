"""Workers that take a while to start: a longer deadline for their acks.

python examples/slow_start.py     # "Ready" once both workers warmed up
"""

import asyncio
import os

from runtime import ProcessGroup, Runtime
from runtime.demo import app

ProcessGroup.THRESHOLD = 600  # tenths of a second: each worker may take 60 s

rt = Runtime("slow", app=app)


@rt.before_server_start
async def warm_up(rt):
    await asyncio.sleep(1)  # load a model, fill a cache: the ack waits for it


if __name__ == "__main__":
    rt.run(port=int(os.environ.get("PORT", 8088)), workers=2)

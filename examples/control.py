"""The inspector with a command of your own.

python examples/control.py
runtime inspect                   # the status of every process
runtime inspect greet --who=ops   # calls greet(who="ops") in the manager

Both read RUNTIME_INSPECTOR_PORT, so they agree on another port than 6457.
"""

import os

from runtime import Runtime
from runtime.demo import app

rt = Runtime("control", app=app)


@rt.inspector_command
def greet(who: str = "world"):
    servers = [e for e in rt.manager.workers.values() if e["server"]]
    return f"hello {who}, {len(servers)} server worker(s) here"


if __name__ == "__main__":
    rt.run(
        port=int(os.environ.get("PORT", 8084)),
        workers=2,
        inspector=True,
        inspector_port=int(os.environ.get("RUNTIME_INSPECTOR_PORT", 6457)),
    )

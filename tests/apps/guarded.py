"""The Runtime exists only under the main guard: workers cannot find it."""

import os

from runtime import Runtime
from runtime.demo import app

if __name__ == "__main__":
    Runtime.start_method = os.environ.get("RT_START_METHOD", "spawn")
    rt = Runtime("guarded", app=app)
    rt.run(host="127.0.0.1", port=0, workers=2)

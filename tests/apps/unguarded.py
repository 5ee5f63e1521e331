"""run() at module level, with no main guard."""

import os

from runtime import Runtime
from runtime.demo import app

Runtime.start_method = os.environ.get("RT_START_METHOD", "spawn")
rt = Runtime("unguarded", app=app)
rt.run(host="127.0.0.1", port=int(os.environ.get("RT_PORT", "0")), workers=2)

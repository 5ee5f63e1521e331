"""An app whose workers fail to start while the file named by RT_FAIL_FILE
exists; run it with ``runtime run flaky:rt``."""

import os

from runtime import Runtime
from runtime.demo import app

rt = Runtime("flaky", app=app)


@rt.before_server_start
def maybe_fail(rt):
    flag = os.environ.get("RT_FAIL_FILE")
    if flag and os.path.exists(flag):
        raise RuntimeError(f"{flag} exists: refusing to start")

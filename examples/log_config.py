"""One logging set-up for every process, spawned workers included.

python examples/log_config.py     # then: curl http://127.0.0.1:8087/
"""

import logging
import os

from runtime import Runtime

LOGGING = {  # a logging.config.dictConfig dict; --log-config FILE reads the same
    "version": 1,
    "formatters": {"short": {"format": "%(processName)s %(levelname)s %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "short"}},
    "root": {"handlers": ["out"], "level": "INFO"},
}
log = logging.getLogger("shop")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    log.info("served %s", scope["path"])  # "Runtime-Server-0-0 INFO served /"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"logged\n"})


rt = Runtime("logged", app=app)

if __name__ == "__main__":
    rt.run(port=int(os.environ.get("PORT", 8087)), workers=2, log_config=LOGGING)

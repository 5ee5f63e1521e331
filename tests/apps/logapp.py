"""An app for the logging tests: each request can log, at any size.

Run as a script (``python logapp.py METHOD``) it sets logging up only under the
main guard: with ``LOGAPP_FILE`` set, as a dictConfig dict passed to run() that
writes into that file; otherwise with ``logging.basicConfig``.
"""

import logging
import os
import sys
from urllib.parse import parse_qs

from runtime import Runtime

log = logging.getLogger("logapp")


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    if scope["path"] == "/log":
        size = int(query.get("size", ["10"])[0])
        log.warning("record %s %s end", query.get("id", ["-"])[0], "x" * size)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


rt = Runtime("logapp", app)


def file_config(path: str) -> dict:
    return {
        "version": 1,
        "formatters": {"f": {"format": "CFG %(processName)s %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": path, "formatter": "f"}
        },
        "root": {"handlers": ["file"], "level": "INFO"},
    }


if __name__ == "__main__":
    Runtime.start_method = sys.argv[1]
    path = os.environ.get("LOGAPP_FILE")
    if path:
        rt.run(port=0, workers=2, log_config=file_config(path))
    else:
        logging.basicConfig(format="USER %(processName)s %(message)s")
        rt.run(port=0, workers=2)

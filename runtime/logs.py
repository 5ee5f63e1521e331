"""One log format for every process: time, process name and pid, level, message."""

from __future__ import annotations

import logging
import multiprocessing
import sys

FORMAT = "%(asctime)s %(processName)s[%(process)d] %(levelname)s %(message)s"
MAIN_NAME = "Runtime-Main"

log = logging.getLogger("runtime")


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.processName == "MainProcess":
            record.processName = MAIN_NAME
        return super().format(record)


def configure(level: str, access_log: bool = False) -> None:
    """Install the runtime's handler unless the program configured logging."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Formatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    log.setLevel(level)
    # uvicorn's own start-up chatter repeats per worker; keep its warnings only.
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    logging.getLogger("uvicorn.error").setLevel(quiet)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO if access_log else logging.WARNING)


def process_name() -> str:
    name = multiprocessing.current_process().name
    return MAIN_NAME if name == "MainProcess" else name

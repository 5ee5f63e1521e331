"""Listeners: user functions called with the runtime at fixed points of a run.

Main-process events run in the manager; server events run in every worker.
Stop events run in the reverse order of registration, so that whatever a start
listener set up is torn down in the opposite order.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

MAIN_EVENTS = ("main_process_start", "main_process_ready", "main_process_stop")
SERVER_EVENTS = (
    "before_server_start",
    "after_server_start",
    "before_server_stop",
    "after_server_stop",
)
EVENTS = MAIN_EVENTS + SERVER_EVENTS
_REVERSED = {"main_process_stop", "before_server_stop", "after_server_stop"}

Listener = Callable[[Any], Any]


class Listeners:
    def __init__(self) -> None:
        self._by_event: dict[str, list[Listener]] = {e: [] for e in EVENTS}

    def add(self, event: str, fn: Listener) -> Listener:
        if event not in self._by_event:
            raise ConfigError(
                f"unknown listener event {event!r}; use one of {', '.join(EVENTS)}"
            )
        if not callable(fn):
            raise ConfigError(f"a {event} listener must be callable, got {fn!r}")
        self._by_event[event].append(fn)
        return fn

    async def run(self, event: str, runtime: Any) -> None:
        """Call each listener of ``event`` with the runtime; the first error stops."""
        listeners = self._by_event[event]
        if event in _REVERSED:
            listeners = listeners[::-1]
        for fn in listeners:
            result = fn(runtime)
            if inspect.isawaitable(result):
                await result

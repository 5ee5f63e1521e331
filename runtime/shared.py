"""``rt.shared_ctx``: objects built in the main process and handed to every worker.

Objects are attached in a ``main_process_start`` listener, before any worker
starts; every server worker (and every later one: restarted, respawned, scaled
up) receives the same objects. Only objects made for crossing processes are
shared: multiprocessing's locks, events, queues, pipes, shared values and arrays,
shared memory, manager proxies, and tuples of those. Anything else is stored, but
each worker gets its own copy, and a warning says so once per attribute.
"""

from __future__ import annotations

import ctypes
import logging
from multiprocessing import (
    connection,
    managers,
    queues,
    shared_memory,
    sharedctypes,
    synchronize,
)
from typing import Any

log = logging.getLogger("runtime")

_SHAREABLE = (
    synchronize.SemLock,
    synchronize.Condition,
    synchronize.Event,
    synchronize.Barrier,
    queues.Queue,
    queues.SimpleQueue,
    connection.Connection,
    sharedctypes.SynchronizedBase,
    shared_memory.SharedMemory,
    managers.BaseProxy,
    ctypes._SimpleCData,  # RawValue
    ctypes.Array,  # RawArray
)


def unshared_part(value: object) -> str | None:
    """None if ``value`` crosses processes; else, for a message, which part does
    not: "" for the value itself, ": its item 1 (int)" inside a tuple."""
    if isinstance(value, tuple):
        for index, item in enumerate(value):
            if unshared_part(item) is not None:
                return f": its item {index} ({type(item).__name__})"
        return None
    return None if isinstance(value, _SHAREABLE) else ""


class SharedContext:
    """A namespace of multiprocessing-safe objects (queues, locks, values...)."""

    def __init__(self) -> None:
        object.__setattr__(self, "_where", "main")  # "main", "attaching", "worker"
        object.__setattr__(self, "_warn", True)  # False in single-process mode

    def __setattr__(self, name: str, value: Any) -> None:
        where = self._where
        if where == "worker":
            raise RuntimeError(
                f"rt.shared_ctx.{name} cannot be set in a worker process: shared "
                f"objects are attached in the main process, in a "
                f"main_process_start listener"
            )
        if where != "attaching":
            raise RuntimeError(
                f"rt.shared_ctx.{name} was set outside a main_process_start "
                f"listener; attach shared objects there (before any worker starts)"
            )
        part = unshared_part(value)
        if part is not None and self._warn:
            log.warning(
                "rt.shared_ctx.%s (%s)%s is not shared between processes: each "
                "worker gets its own copy. Use multiprocessing objects from "
                "rt.context (Queue, Value, Array, Lock, Event...) to share state.",
                name,
                type(value).__name__,
                part,
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if self._where != "attaching":
            raise RuntimeError(
                "rt.shared_ctx can only change in a main_process_start listener"
            )
        object.__delattr__(self, name)

    def open_for_listeners(self, is_open: bool, *, single: bool = False) -> None:
        """The main process is (or no longer is) running main_process_start."""
        object.__setattr__(self, "_where", "attaching" if is_open else "main")
        object.__setattr__(self, "_warn", not single)

    def items(self) -> dict[str, Any]:
        """Every attached object, keyed as it appears in messages: shared_ctx.NAME."""
        return {f"shared_ctx.{k}": v for k, v in self._attached().items()}

    def attach_all(self, items: dict[str, Any]) -> None:
        """In a worker: receive the main process's objects; read-only afterwards."""
        for key, value in items.items():
            object.__setattr__(self, key.removeprefix("shared_ctx."), value)
        object.__setattr__(self, "_where", "worker")

    def _attached(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return f"SharedContext({', '.join(self._attached())})"

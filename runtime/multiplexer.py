"""``rt.m``: a server worker's handle to the manager.

Requests travel on the worker's own pipe (see ``messages``). The state table is
pushed by the manager whenever it changes, so ``workers`` and ``state`` read a
recent snapshot without a round trip. Invalid requests raise here, before they
are sent. Every request returns a ``Reply``: await it to learn whether the
manager accepted it (``RequestRefused`` says why not); a refusal nobody awaits
is logged by the worker.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import itertools
import logging
import os
import pickle
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, MutableMapping
from multiprocessing.connection import Connection
from typing import Any

from .errors import RequestRefused
from .messages import (
    ManageRequest,
    Reply,
    Request,
    RestartRequest,
    ScaleRequest,
    StateUpdate,
    TerminateRequest,
)
from .state import SYSTEM_KEYS

log = logging.getLogger("runtime")

_ALIVE = {"STARTING", "STARTED", "ACKED", "RESTARTING"}
MAX_STATE_VALUE = 16 * 1024  # bytes, pickled


class Multiplexer:
    """What a server worker may know and ask of the group."""

    def __init__(self, conn: Connection, name: str) -> None:
        self.name = name
        self.pid = os.getpid()
        self._conn = conn
        self._lock = threading.Lock()
        self._table: dict[str, dict[str, Any]] = {}
        self._own: dict[str, Any] = {}  # user keys set here, not yet echoed back
        self._ids = itertools.count(1)
        self._waiting: dict[int, PendingReply] = {}

    @property
    def state(self) -> WorkerState:
        """This worker's state entry; keys other than the system ones are yours."""
        return WorkerState(self)

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        """Every process's state entry, as the manager last reported it."""
        return copy.deepcopy(self._table)

    def restart(
        self,
        process_names: str | Iterable[str] | None = None,
        *,
        all_workers: bool = False,
        zero_downtime: bool = False,
    ) -> PendingReply:
        """Restart this worker, the named processes, or every server worker."""
        names = split_names(process_names)
        check_restart_arguments(names, all_workers, zero_downtime)
        if not names and not all_workers:
            names = [self.name]
        known = {k for k in self._table if k != "Runtime-Main"}
        unknown = [n for n in names if self._table and n not in known]
        if unknown:
            raise ValueError(
                f"no process named {', '.join(map(repr, unknown))}; current "
                f"ones: {', '.join(sorted(known))}"
            )
        return self._ask(RestartRequest, tuple(names), all_workers, bool(zero_downtime))

    reload = restart

    def scale(self, workers: int) -> PendingReply:
        """Run ``workers`` server workers from now on."""
        check_scale(workers)
        if workers == self._size():
            raise ValueError(f"the group already runs {workers} server worker(s)")
        return self._ask(ScaleRequest, workers)

    def _size(self) -> int:
        slots = {
            name.rsplit("-", 1)[0]
            for name, entry in self._table.items()
            if entry.get("server") and entry.get("state") in _ALIVE
        }
        return len(slots)

    def terminate(self) -> PendingReply:
        """Stop the whole group."""
        return self._ask(TerminateRequest)

    def manage(
        self,
        name: str,
        func: Callable[..., Any],
        kwargs: dict[str, Any] | None = None,
        *,
        transient: bool = False,
        restartable: bool | None = None,
        tracked: bool = True,
        workers: int = 1,
        auto_start: bool = True,
    ) -> PendingReply:
        """Start custom process(es), as ``rt.manager.manage()`` does."""
        if not callable(func):
            raise ValueError(f"custom process {name!r}: {func!r} is not callable")
        options = {
            "transient": transient,
            "restartable": restartable,
            "tracked": tracked,
            "workers": workers,
            "auto_start": auto_start,
        }
        return self._ask(ManageRequest, name, func, kwargs, options)

    def _ask(self, kind: type[Request], *args: Any) -> PendingReply:
        request_id = next(self._ids)
        reply = self._waiting[request_id] = PendingReply(kind.__name__)
        try:
            self.send(kind(request_id, *args))
        except (TypeError, AttributeError, RuntimeError, pickle.PicklingError) as exc:
            del self._waiting[request_id]
            raise ValueError(
                f"{kind.__name__} could not be sent to the manager: {exc}. Requests "
                f"travel over a pipe: use module-level functions and plain "
                f"arguments (multiprocessing locks, queues and values cannot "
                f"travel that way)"
            ) from exc
        return reply

    def replied(self, message: Reply) -> None:
        reply = self._waiting.pop(message.request_id, None)
        if reply is not None:
            reply.settle(message.error)

    def send(self, message: object) -> None:
        with self._lock:
            self._conn.send(message)

    def fileno(self) -> int:
        return self._conn.fileno()

    def received(self) -> Iterator[object]:
        """Messages waiting on the pipe; raises EOFError once the manager is gone."""
        while self._conn.poll():
            yield self._conn.recv()

    def update_table(self, entries: dict[str, dict[str, Any]]) -> None:
        self._table = entries
        mine = entries.get(self.name, {})
        for key in [k for k in self._own if mine.get(k) == self._own[k]]:
            del self._own[key]

    def _entry(self) -> dict[str, Any]:
        return {**self._table.get(self.name, {}), **self._own}

    def _set(self, key: str, value: Any) -> None:
        _check_user_key(key)
        try:
            size = len(pickle.dumps(value))
        except Exception as exc:
            raise ValueError(
                f"rt.m.state[{key!r}] must be picklable to reach the manager: {exc}"
            ) from exc
        if size > MAX_STATE_VALUE:
            raise ValueError(
                f"rt.m.state[{key!r}] is {size} bytes pickled; state values are "
                f"for small facts (at most {MAX_STATE_VALUE} bytes): share data "
                f"through rt.shared_ctx instead"
            )
        self.send(StateUpdate({key: value}))
        self._own[key] = value

    def _delete(self, key: str) -> None:
        _check_user_key(key)
        if key not in self._entry():
            raise KeyError(key)
        self._own.pop(key, None)
        self._table.get(self.name, {}).pop(key, None)
        self.send(StateUpdate({}, (key,)))


def _check_user_key(key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"state keys are strings, got {key!r}")
    if key in SYSTEM_KEYS:
        raise KeyError(
            f"{key!r} is kept by the runtime and cannot be changed; use a key of "
            f"your own (not one of {', '.join(sorted(SYSTEM_KEYS))})"
        )


class WorkerState(MutableMapping[str, Any]):
    """A live view of one worker's state entry."""

    def __init__(self, mux: Multiplexer) -> None:
        self._mux = mux

    def __getitem__(self, key: str) -> Any:
        return self._mux._entry()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._mux._set(key, value)

    def __delitem__(self, key: str) -> None:
        self._mux._delete(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._mux._entry())

    def __len__(self) -> int:
        return len(self._mux._entry())

    def __repr__(self) -> str:
        return repr(self._mux._entry())


MAX_WORKERS = 1024


def check_scale(workers: object) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise ValueError(f"scale() needs a whole number of workers, got {workers!r}")
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(
            f"scale() needs 1 to {MAX_WORKERS} server workers, got {workers!r}"
        )


def check_restart_arguments(
    names: list[str], all_workers: object, zero_downtime: object
) -> None:
    for flag, value in (("all_workers", all_workers), ("zero_downtime", zero_downtime)):
        if not isinstance(value, bool):
            raise ValueError(f"restart() needs {flag}=True or False, got {value!r}")
    if names and all_workers:
        raise ValueError(
            "restart() got process names and all_workers=True; pass one of them"
        )


def split_names(names: str | Iterable[str] | None) -> list[str]:
    """``"a,b"`` or ``["a", "b"]`` to ``["a", "b"]``; None to ``[]``."""
    if names is None:
        return []
    if isinstance(names, str):
        names = names.split(",")
    try:
        parts = [name.strip() for name in names]
    except (TypeError, AttributeError):
        raise ValueError(
            f"process names must be a comma-separated string or a list of "
            f"strings, got {names!r}"
        ) from None
    if not all(parts):
        raise ValueError(f"process names {names!r} include an empty name")
    return parts


class PendingReply:
    """The manager's answer to one request: ``await`` it, or ``result(timeout)``
    from another thread. Raises RequestRefused if the manager refused."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._awaited = False

    def settle(self, error: str | None) -> None:
        if error is None:
            self._future.set_result(None)
            return
        self._future.set_exception(RequestRefused(error))
        if not self._awaited:
            log.warning("The manager refused %s: %s", self.what, error)

    def __await__(self) -> Generator[Any, None, None]:
        self._awaited = True
        return asyncio.wrap_future(self._future).__await__()

    def result(self, timeout: float | None = None) -> None:
        """Wait for the answer; never call this on the worker's own event loop."""
        self._awaited = True
        self._future.result(timeout)

    def done(self) -> bool:
        return self._future.done()

"""Custom processes: user callables that the manager runs beside the workers.

``rt.manager.manage(name, func, kwargs)`` starts ``func(**kwargs)`` as
``Runtime-<name>-<i>`` for i < ``workers``. A plain function runs as it is; one
that returns a coroutine (``async def``) runs on a fresh event loop.

Stopping: the manager sends SIGTERM, which the process sees as
KeyboardInterrupt (so ``except KeyboardInterrupt`` cleans up, and so does a
``finally``); after the graceful timeout it sends SIGKILL. If the manager dies,
a watcher thread notices its pipe closing and stops the process the same way,
so no custom process outlives its manager. Each custom process leads a process
group of its own; whatever it started and left behind is killed when it ends.

Flags: ``transient`` processes are restarted with the server workers (restart
all, reloader); durable ones are not. ``restartable`` ones may be restarted by
name, running or finished; transient implies restartable. ``tracked`` ones keep
their state entry after they end (COMPLETED for exit 0, FAILED otherwise);
untracked ones leave the table when they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import multiprocessing
import os
import re
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import attrs

from . import logs, start_methods, titles
from .children import CONTROL_SIGNALS, MANAGER_SIGNALS, die_with_parent
from .errors import ConfigError, SharedContextError

_NAME = re.compile(r"^[A-Za-z0-9_.]+$")
RESERVED = {"Main", "Server", "Reloader", "Inspector"}


@attrs.frozen
class CustomSpec:
    """A custom process as registered with ``manage()``."""

    name: str
    func: Callable[..., Any]
    kwargs: dict[str, Any]
    transient: bool
    restartable: bool
    tracked: bool
    workers: int
    auto_start: bool
    # The runtime's own processes (the reloader) talk to the manager: their
    # target gets the pipe as ``pipe=``.
    pipe: bool = False

    def process_names(self) -> list[str]:
        return [f"Runtime-{self.name}-{i}" for i in range(self.workers)]


def custom_spec(
    name: object,
    func: object,
    kwargs: object,
    *,
    transient: object,
    restartable: object,
    tracked: object,
    workers: object,
    auto_start: object,
    method: str,
) -> CustomSpec:
    """Validate ``manage()`` arguments; raise ConfigError naming what is wrong."""
    if not isinstance(name, str) or not _NAME.match(name) or name in RESERVED:
        raise ConfigError(
            f"custom process name {name!r} is not valid; use letters, digits, '_' "
            f"or '.', other than {', '.join(sorted(RESERVED))}"
        )
    if not callable(func):
        raise ConfigError(
            f"custom process {name!r}: the target {func!r} is not callable"
        )
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(
            f"custom process {name!r}: kwargs must be a dict of keyword arguments, "
            f"got {kwargs!r}"
        )
    flags = {"transient": transient, "tracked": tracked, "auto_start": auto_start}
    for flag, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"custom process {name!r}: {flag} must be True or False")
    if restartable is None:
        restartable = transient or not auto_start
    if not isinstance(restartable, bool):
        raise ConfigError(f"custom process {name!r}: restartable must be True or False")
    if transient and not restartable:
        raise ConfigError(
            f"custom process {name!r}: transient=True with restartable=False "
            f"contradicts itself (transient processes are restarted); drop one"
        )
    if not auto_start and not restartable:
        raise ConfigError(
            f"custom process {name!r}: auto_start=False with restartable=False "
            f"could never run (it starts on a restart by name); drop one"
        )
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(
            f"custom process {name!r}: workers must be 1 or more, got {workers!r}"
        )
    _check_picklable(name, func, kwargs, method)
    return CustomSpec(
        name, func, kwargs, transient, restartable, tracked, workers, auto_start
    )


def _check_picklable(name: str, func: Any, kwargs: dict[str, Any], method: str) -> None:
    items = {f"custom process {name!r}: its target": func}
    items.update(
        {f"custom process {name!r}: kwargs[{k!r}]": v for k, v in kwargs.items()}
    )
    try:
        start_methods.check_transferable(method, items)
    except SharedContextError as exc:
        raise ConfigError(str(exc)) from exc


def custom_main(
    func: Callable[..., Any],
    kwargs: dict[str, Any],
    log: logs.LogSettings,
    grace: float,
    pass_pipe: bool,
    conn: Connection,
) -> None:
    """Process entry point of a custom process."""
    titles.set_title(multiprocessing.current_process().name)
    # A process group of its own: what it starts can be ended with it.
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    signal.set_wakeup_fd(-1)
    for sig in CONTROL_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    parent = os.getppid()
    orphaned = threading.Event()
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MANAGER_SIGNALS)
        logs.configure(log, child=True)
        watcher = threading.Thread(
            target=_watch_manager, args=(conn, grace, orphaned), daemon=True
        )
        watcher.start()
        die_with_parent()
        result = func(**kwargs, pipe=conn) if pass_pipe else func(**kwargs)
        if inspect.iscoroutine(result):
            asyncio.run(result)
    except KeyboardInterrupt:
        pass
    finally:
        _stopping.set()  # no interrupting the exit
        if orphaned.is_set() or os.getppid() != parent:
            _end_group(signal.SIGKILL)  # nobody else will end what it started


_stopping = threading.Event()


def _interrupt(signum: int, frame: Any) -> None:
    # Once: a stop that already began must not be interrupted again. (The
    # handler stays installed: swapping it for SIG_IGN races with a signal
    # already on its way, which Python then reports as an error.)
    if not _stopping.is_set():
        _stopping.set()
        raise KeyboardInterrupt


def _watch_manager(conn: Connection, grace: float, orphaned: threading.Event) -> None:
    # The manager never writes to this pipe; it only closes when the manager ends.
    try:
        while True:
            conn.recv()
    except (EOFError, OSError):
        orphaned.set()
        os.kill(os.getpid(), signal.SIGTERM)
        _end_group(signal.SIGTERM)
        time.sleep(grace)  # then nothing of the group may outlive the manager
        _end_group(signal.SIGKILL)


def _end_group(sig: int) -> None:
    with contextlib.suppress(OSError):
        if os.getpgid(0) == os.getpid():
            os.killpg(0, sig)

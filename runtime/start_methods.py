"""Start methods: the one place that decides how child processes are created.

Design note
-----------
Python offers three ways to start a child process:

* ``fork`` copies the parent (POSIX only). Fastest and lightest, but the child
  inherits every thread's locks (a lock held by another thread stays held forever in
  the child) and, before 3.12, the parent's event loop and signal wakeup fd.
* ``spawn`` starts a fresh interpreter that re-imports the main module by name.
  Slowest and heaviest, but it inherits nothing by accident, it is the only method
  on Windows and the default on macOS since 3.8.
* ``forkserver`` forks children from a small, single-threaded server process that
  preloads chosen modules (POSIX where file descriptors can be passed). Close to fork
  in cost, close to spawn in safety. It is Linux's default from 3.14.

The runtime defaults to spawn: it behaves the same on every platform and Python
version, and a worker can never be poisoned by the manager's threads or loop.

Python's *global* start method is fixed the first time anything asks for it (module
level ``multiprocessing.Queue()``, ``get_context()`` with no name, starting any
Process...). After that ``set_start_method`` raises unless forced. The resolver
therefore never forces anything: when nobody has chosen yet it sets the global method
to the requested one, so that objects the user builds with the module-level factories
match the workers; when another method is already fixed it keeps it and uses an
explicit context for the requested method, warning once. The only case it cannot
recover from is an object that must cross into a spawn or forkserver child but was
built in a fork context (its semaphores cannot be sent); that is checked before any
worker starts.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import sys
import sysconfig
import threading
from collections.abc import Iterable, Mapping
from multiprocessing import context as mp_context
from multiprocessing import forkserver
from multiprocessing.context import BaseContext
from multiprocessing.reduction import ForkingPickler

from .errors import SharedContextError, StartMethodError

log = logging.getLogger("runtime")

DEFAULT = "spawn"

_skip_setup = False
_warned: set[tuple[str, str]] = set()


def skip_start_method_setup() -> None:
    """Use Python's global start method as it is; the runtime will not choose one.

    Call it early, before ``run()``, when the program (or a library) sets the start
    method itself. ``Runtime.start_method`` is then ignored.
    """
    global _skip_setup
    _skip_setup = True


def setup_skipped() -> bool:
    """Whether the program called skip_start_method_setup()."""
    return _skip_setup


def available() -> list[str]:
    return multiprocessing.get_all_start_methods()


KNOWN = ("fork", "spawn", "forkserver")


def validate(method: object) -> str:
    """Return ``method`` if this platform has it, else raise StartMethodError."""
    methods = available()
    if isinstance(method, str) and method in methods:
        return method
    why = "is not available on this platform" if method in KNOWN else "is unknown"
    raise StartMethodError(
        f"start method {method!r} {why}; choose one of: {', '.join(methods)}"
    )


class StartMethodResolver:
    """Turns the requested start method into a ``multiprocessing`` context.

    With ``reload``, fork becomes spawn: a forked worker runs the code the
    manager imported at start-up, so it could never serve a change.
    """

    def __init__(
        self, requested: str, *, skip: bool | None = None, reload: bool = False
    ) -> None:
        self.requested = validate(requested)
        self.skip = _skip_setup if skip is None else skip
        self.reload = reload

    @property
    def method(self) -> str:
        """The method the runtime's processes will use, without fixing anything."""
        chosen = self._chosen()
        return "spawn" if self.reload and chosen == "fork" else chosen

    def _chosen(self) -> str:
        if self.skip:
            current = multiprocessing.get_start_method(allow_none=True)
            return current or available()[0]
        return self.requested

    def resolve(self) -> BaseContext:
        if self.reload and self._chosen() == "fork":
            _warn_once(
                ("reload", "fork"),
                "Auto-reload: forked workers would keep running the code the "
                "manager imported at start-up, so workers start with spawn while "
                "reloading (the fork start method applies without reload)",
            )
            if self.skip:
                return multiprocessing.get_context("spawn")
            wanted = "spawn"
        elif self.skip:
            return multiprocessing.get_context()
        else:
            wanted = self.requested
        current = multiprocessing.get_start_method(allow_none=True)
        if current is None:
            multiprocessing.set_start_method(wanted)
        elif current != wanted:
            _warn_once(
                (wanted, current),
                f"Start method {wanted!r} was requested but Python's global start "
                f"method is already {current!r}; the runtime starts its processes "
                f"from an explicit {wanted!r} context. Build shared objects from "
                f"rt.context (for example rt.context.Queue()), set "
                f"Runtime.start_method = {current!r} to follow the global method, "
                f"or call skip_start_method_setup() to use it as is.",
            )
        return multiprocessing.get_context(wanted)


def _warn_once(key: tuple[str, str], message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning("%s", message)


def check_transferable(method: str, items: Mapping[str, object]) -> None:
    """Fail before any worker starts if an object cannot reach a ``method`` child.

    Under fork nothing is pickled. Under spawn and forkserver each value is pickled
    once as multiprocessing would while starting a process, so a fork-context lock or
    an unpicklable object is reported here, by name, rather than from a child.
    """
    if method == "fork":
        return
    for name, value in items.items():
        _dry_run_pickle(method, name, value)


class _DryRunPopen:
    """Stands in for a spawning Popen so that picklers accept process-only objects."""

    def duplicate_for_child(self, fd: int) -> int:
        return fd

    class DupFd:
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def detach(self) -> int:
            return self.fd


def _dry_run_pickle(method: str, name: str, value: object) -> None:
    mp_context.set_spawning_popen(_DryRunPopen())
    try:
        ForkingPickler.dumps(value)
    except RuntimeError as exc:
        fixed = multiprocessing.get_start_method(allow_none=True) == "fork"
        also = (
            "; or remove the code that fixes the global start method to 'fork'"
            if fixed
            else ""
        )
        raise SharedContextError(
            f"Start method {method!r} was requested, but {name} was built in a "
            f"'fork' context, so its locks cannot be sent to {method} workers. "
            f"Ways out: build it from rt.context in main_process_start (for example "
            f"rt.context.Queue()); or set Runtime.start_method = 'fork'{also}."
        ) from exc
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise SharedContextError(
            f"{name} ({type(value).__name__}) cannot be sent to a {method!r} worker: "
            f"{exc}. A {method} process receives its arguments pickled and finds "
            f"functions by importing them by name, so lambdas, local functions, "
            f"open files and event loops cannot cross; use module-level objects "
            f"or Runtime.start_method = 'fork'."
        ) from exc
    finally:
        mp_context.set_spawning_popen(None)


def warn_if_threaded() -> None:
    """Warn once per call if forking now could copy another thread's held locks."""
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    hidden = _os_thread_count() - 1 - len(others)
    if not others and hidden <= 0:
        return
    parts = []
    if others:
        parts.append("threads " + ", ".join(repr(n) for n in others))
    if hidden > 0:
        parts.append(f"{hidden} thread(s) not started by Python's threading")
    log.warning(
        "Forking workers while the main process runs %s; a lock held by one of "
        "them stays locked in every worker. Start those threads after run() (in a "
        "worker listener), or use Runtime.start_method = 'spawn' or 'forkserver'.",
        " and ".join(parts),
    )


def _os_thread_count() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def installed_packages() -> list[str]:
    """Top-level packages imported so far from site-packages (libraries, not the
    program's own code), in a stable order."""
    paths = sysconfig.get_paths()
    roots = tuple({paths["purelib"], paths["platlib"]})
    names = set()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None) or ""
        if "." not in name and not name.startswith("_") and file.startswith(roots):
            names.add(name)
    return sorted(names)


def start_forkserver(ctx: BaseContext, modules: Iterable[str]) -> None:
    """Start the fork server now, importing ``modules`` once so workers start warm.

    It is started with the stop and control signals ignored: a Ctrl+C or a
    SIGTERM sent to the whole process group must reach the manager and the
    workers, not end the server that reports the workers' exit statuses.
    """
    if ctx.get_start_method() != "forkserver":
        return
    ctx.set_forkserver_preload(list(dict.fromkeys(modules)))
    ignored = (
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGHUP,
        signal.SIGTTIN,
        signal.SIGTTOU,
    )
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in ignored}
    try:
        forkserver.ensure_running()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

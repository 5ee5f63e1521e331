"""The reloader: restarts the transient processes when source files change.

Design note
-----------
With auto-reload on, the manager runs ``Runtime-Reloader-0``, a durable child
process that watches the source tree with watchfiles (inotify on Linux, no
polling). It needs no code of the user's: it reports each batch of changed files
to the manager as one ``Reload`` message and the manager does the rest.

Merging: watchfiles yields a batch once no new change arrived for ``STEP_MS``
(but at least every ``DEBOUNCE_MS`` while changes keep coming), so a save of
several files, or a ``git checkout``, is one batch. The manager turns a batch
into a zero-downtime restart of every server worker and transient custom
process. The conductor merges restart requests: a batch that arrives while a
restart runs leads to exactly one more restart after it, whatever the number of
batches meanwhile, and no change is lost.

Broken code: the replacement worker fails before its ack (its traceback is
logged once), the old worker keeps serving the previous code, the reloader keeps
watching, and the next batch tries again.

Stale bytecode: a ``.pyc`` file records its source's modification time in whole
seconds and its size, so an edit made in the same second as the last import that
keeps the size would be served from the stale cache. The reloader removes the
cache files of the changed sources before it reports them.

What counts: files matching an include pattern (``*.py`` by default) and no
exclude pattern, below a watched directory, and not inside a hidden directory,
``__pycache__``, ``node_modules``, ``site-packages`` or a virtual environment
(a directory holding ``pyvenv.cfg``), nor one of the paths the runtime itself
writes (a unix socket).
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.util
import logging
import os
import sys
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from .messages import Reload

if TYPE_CHECKING:
    import watchfiles

log = logging.getLogger("runtime")

NAME = "Reloader"  # the process is Runtime-Reloader-0
STEP_MS = 250
DEBOUNCE_MS = 1600
TIMEOUT_MS = 500  # the watcher checks signals every STEP_MS anyway
IGNORED_DIRS = frozenset({"__pycache__", "node_modules", "site-packages"})


@attrs.frozen
class ReloadSpec:
    """What the reloader watches: directories, and which files in them count."""

    roots: tuple[str, ...]
    include: tuple[str, ...] = ("*.py",)
    exclude: tuple[str, ...] = ()
    ignore_paths: tuple[str, ...] = ()


def source_root(module_name: str) -> str:
    """The directory of the user's code: the top-level package holding
    ``module_name``, the directory of a top-level module, or else the working
    directory."""
    if module_name in ("__main__", "__mp_main__"):
        main = sys.modules.get("__main__")
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module_name = spec.name  # started with python -m
        elif getattr(main, "__file__", None):
            return os.path.dirname(os.path.abspath(main.__file__))
        else:
            return os.getcwd()
    top = sys.modules.get(module_name.partition(".")[0])
    if top is None or top.__name__ == __package__:  # the built-in demo app
        return os.getcwd()
    paths = list(getattr(top, "__path__", None) or [])
    if paths:
        return os.path.abspath(paths[0])
    file = getattr(top, "__file__", None)
    return os.path.dirname(os.path.abspath(file)) if file else os.getcwd()


class SourceFilter:
    """watchfiles filter: True for a change that should lead to a reload."""

    def __init__(self, spec: ReloadSpec) -> None:
        self.roots = [Path(root) for root in spec.roots]
        self.include = spec.include
        self.exclude = spec.exclude
        self.ignore_paths = {Path(p) for p in spec.ignore_paths}

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        file = Path(path)
        if file in self.ignore_paths:
            return False
        root = next((r for r in self.roots if file.is_relative_to(r)), None)
        if root is None:
            return False
        relative = file.relative_to(root)
        if any(part.startswith(".") or part in IGNORED_DIRS for part in relative.parts):
            return False
        if _in_virtual_env(root, relative):
            return False
        name, posix = relative.name, relative.as_posix()
        if not any(_matches(name, posix, pattern) for pattern in self.include):
            return False
        return not any(_matches(name, posix, pattern) for pattern in self.exclude)


def _matches(name: str, posix: str, pattern: str) -> bool:
    # A pattern with a slash matches the path below the root, others the name.
    return fnmatch.fnmatch(posix if "/" in pattern else name, pattern)


def _in_virtual_env(root: Path, relative: Path) -> bool:
    folder = root
    for part in relative.parts[:-1]:
        folder = folder / part
        if (folder / "pyvenv.cfg").exists():
            return True
    return False


def watch(spec: ReloadSpec, pipe: Connection) -> None:
    """The reloader process's work: report each batch of changes, until stopped."""
    import watchfiles  # here: only the reloader process needs it

    changes = watchfiles.watch(
        *spec.roots,
        watch_filter=SourceFilter(spec),
        step=STEP_MS,
        debounce=DEBOUNCE_MS,
        # The first (empty) batch comes once the watches are in place.
        yield_on_timeout=True,
        rust_timeout=TIMEOUT_MS,
        ignore_permission_denied=True,
    )
    watching = False
    for batch in changes:
        if not watching:
            watching = True
            log.info(
                "Watching %s for changes to %s",
                ", ".join(spec.roots),
                ", ".join(spec.include),
            )
        if batch:
            paths = tuple(sorted({path for _, path in batch}))
            _drop_bytecode(paths)
            pipe.send(Reload(paths))


def _drop_bytecode(paths: tuple[str, ...]) -> None:
    for path in paths:
        if path.endswith(".py"):
            with contextlib.suppress(OSError, ValueError):
                os.unlink(importlib.util.cache_from_source(path))


def describe(paths: tuple[str, ...], limit: int = 10) -> str:
    """Changed paths for a log line: relative to the working directory if below
    it, at most ``limit`` of them."""
    cwd = Path.cwd()
    shown = []
    for path in paths[:limit]:
        file = Path(path)
        shown.append(str(file.relative_to(cwd)) if file.is_relative_to(cwd) else path)
    more = len(paths) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

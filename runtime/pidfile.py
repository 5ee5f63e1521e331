"""The pid file: the manager's pid (the serving process's, in single-process
mode), for init scripts and monitors.

It is checked before anything binds: a file that names a running process other
than this one stops the start. It is written once the listening socket is bound,
atomically (a temporary file in the same directory, then a rename), so a reader
never sees half a pid; a stale one is replaced with a warning. At exit it is
removed only if it still holds this process's pid, so a run that was refused, or
a newer run that took the file over, keeps its file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator

from .children import running
from .errors import PidFileError

log = logging.getLogger("runtime")


def check(path: str) -> None:
    """Refuse (PidFileError) if ``path`` names a live process that is not us."""
    pid = read(path)
    if pid is not None and pid != os.getpid() and running(pid):
        raise PidFileError(
            f"pid file {path!r} names pid {pid}, which is running; stop that "
            f"process first, or choose another --pid-file"
        )


@contextlib.contextmanager
def held(path: str | None) -> Iterator[None]:
    """Write our pid to ``path`` for the duration; nothing if ``path`` is None."""
    if path is None:
        yield
        return
    write(path)
    try:
        yield
    finally:
        remove(path)


def write(path: str) -> None:
    check(path)  # again: another start may have written it since
    pid = read(path)
    if pid is not None and pid != os.getpid():
        log.warning("Replacing the stale pid file %s: pid %d is not running", path, pid)
    elif pid is None and os.path.lexists(path):
        log.warning("Replacing the pid file %s: it holds no pid", path)
    directory, name = os.path.split(path)
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    except OSError as exc:
        raise PidFileError(
            f"cannot write the pid file {path!r}: {exc.strerror}; choose a path in "
            f"a directory this user can write"
        ) from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise PidFileError(
            f"cannot write the pid file {path!r}: {exc.strerror}; choose another path"
        ) from None


def remove(path: str) -> None:
    """Remove ``path`` if it still holds our pid."""
    try:
        if _pid_in(path) != os.getpid():
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning(
            "Could not remove the pid file %s (%s); the next start replaces it. "
            "Keep it in a directory that the user the runtime runs as can write",
            path,
            exc.strerror,
        )


def read(path: str) -> int | None:
    """The pid ``path`` holds; None if it is missing, unreadable or no pid."""
    try:
        return _pid_in(path)
    except OSError:
        return None


def _pid_in(path: str) -> int | None:
    with open(path, "rb") as f:
        text = f.read(64).strip()
    if not text.isdigit() or not 0 < int(text) < 2**31:
        return None
    return int(text)

"""One managed child process as the manager sees it, and how it is started.

While ``start()`` runs, the stop and control signals are blocked in the manager's
thread; a fork or forkserver child inherits that mask and unblocks the signals
once its own handlers are in place, so a signal during its start-up is delayed,
not lost. A spawn child does not inherit the mask, so it starts with SIGINT (and
the control signals) ignored instead; either way a Ctrl+C during interpreter
start-up is no KeyboardInterrupt traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

import attrs

from .errors import StartFailedError

if TYPE_CHECKING:
    from .custom import CustomSpec
from .messages import Failed
from .state import ProcessEntry, State

# Signals the manager handles itself; workers ignore the control ones.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CONTROL_SIGNALS = (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
MANAGER_SIGNALS = STOP_SIGNALS + CONTROL_SIGNALS

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent ends.

    Linux only; elsewhere the pipe to the manager closing is the only sign. The
    parent of a forkserver child is the fork server, which itself exits when
    the manager ends. A parent that ended already leaves us to init: stop now
    (unless the manager is PID 1 itself, as in a container without an init).
    """
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    if os.getppid() == 1 and _parent_pid() != 1:  # a manager as PID 1 is fine
        os.kill(os.getpid(), sig)


def _parent_pid() -> int | None:
    import multiprocessing

    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


REPEAT_WINDOW = 0.3  # seconds in which a repeated stop signal counts once


class StopSignals:
    """Counts stop signals. One signal often arrives twice at once (sent to a
    process and to its group, as `timeout` does); such a repeat counts once."""

    def __init__(self) -> None:
        self.count = 0
        self._last: float | None = None

    def hit(self) -> int:
        """Count a signal; 0 if it repeats the last one, else how many so far."""
        now = time.monotonic()
        if self._last is not None and now - self._last < REPEAT_WINDOW:
            return 0
        self._last = now
        self.count += 1
        return self.count

    @staticmethod
    def repeat_message(sig: signal.Signals) -> str:
        return (
            f"{sig.name} again within {REPEAT_WINDOW:g} s counts once; send it "
            f"again to stop at once"
        )


# What only the manager may hold: its ends of the children's pipes (a forked
# child would otherwise keep copies of its siblings' ends open, and a sibling
# would never see its pipe close when the manager dies) and the inspector's
# socket. Closed in every forked child.
_manager_ends: set[Connection | socket.socket] = set()


def manager_only(resource: Connection | socket.socket) -> None:
    _manager_ends.add(resource)


def release(resource: Connection | socket.socket) -> None:
    _manager_ends.discard(resource)
    resource.close()


def _close_manager_ends() -> None:
    for resource in _manager_ends:
        resource.close()
    _manager_ends.clear()


os.register_at_fork(after_in_child=_close_manager_ends)


@attrs.define(eq=False)
class Slot:
    """A place for one server worker; its process changes on restarts."""

    index: int
    child: Child | None = None
    generation: int = -1
    starts: int = 0
    streak: int = 0  # consecutive processes that died soon after starting
    respawn: asyncio.TimerHandle | None = None
    parked: bool = False  # crash-looped under reload: waits for a code change
    acked_once: bool = False  # some worker of this slot has served

    @property
    def ready(self) -> bool:
        """Its worker is alive and acked."""
        return self.serving and self.child is not None and self.child.acked.done()

    @property
    def serving(self) -> bool:
        return self.child is not None and not self.child.exited.done()

    def next_name(self) -> str:
        self.generation += 1
        return f"Runtime-Server-{self.index}-{self.generation}"


@attrs.define(eq=False)
class Child:
    """A started process: its pipe, its state entry and what became of it."""

    name: str
    process: BaseProcess
    conn: Connection
    entry: ProcessEntry
    slot: Slot | None
    started_at: float
    acked: asyncio.Future[None]
    exited: asyncio.Future[int | None]
    stopping: bool = False
    failure: Failed | None = None
    stopped_by: str | None = None  # a stop signal the child received directly
    custom: CustomSpec | None = None
    table_in_flight: bool = False
    table_version: int = 0
    beat: Any = None  # shared double the worker's loop writes (health.py)
    last_beat: float = 0.0  # the latest beat the manager saw
    hung: bool = False
    recycle_reason: str | None = None  # a recycle that waits for the slot
    exit_fd: int = attrs.field(init=False, default=-1)
    _owns_exit_fd: bool = attrs.field(init=False, default=False)

    def watch_exit(self) -> int:
        """A file descriptor that becomes readable when the process has ended.

        The process sentinel is a pipe the child holds open, and so does every
        process it forks without closing it: a worker's forked helper would hide
        the worker's exit. Where the OS has pidfds (Linux 5.3+), fork and spawn
        children are watched through one instead. Fork-server children report
        their exit through the fork server, which their own children cannot hold.
        """
        self.exit_fd = self.process.sentinel
        if self.process.__class__.__name__ != "ForkServerProcess":
            with contextlib.suppress(AttributeError, OSError):
                self.exit_fd = os.pidfd_open(self.pid)
                self._owns_exit_fd = True
        return self.exit_fd

    def reap(self) -> int | None:
        """The exit code once the process ended; reaps it without blocking."""
        if self._owns_exit_fd:
            os.close(self.exit_fd)
            self._owns_exit_fd = False
        return self.process.exitcode

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def label(self) -> str:
        return f"{self.name} (pid {self.pid})"

    def send(self, message: object) -> bool:
        """Send if the pipe is still open; False if the child is gone."""
        if self.conn.closed:
            return False
        try:
            self.conn.send(message)
        except OSError:
            return False
        return True

    def close_pipe(self) -> None:
        release(self.conn)


def start_process(
    context: BaseContext,
    name: str,
    target: Callable[..., Any],
    args: tuple[Any, ...],
) -> tuple[BaseProcess, Connection]:
    """Start ``target(*args, conn)`` as process ``name``; return it and our pipe end."""
    ours, theirs = context.Pipe()
    process = context.Process(target=target, name=name, args=(*args, theirs))
    manager_only(ours)
    try:
        with _quiet_child_start(context.get_start_method()):
            process.start()
    except Exception as exc:
        release(ours)
        raise StartFailedError(f"could not start {name}: {exc!r}") from exc
    finally:
        theirs.close()
    return process, ours


@contextlib.contextmanager
def _quiet_child_start(method: str) -> Iterator[None]:
    # A signal landing during the few milliseconds a spawn child takes to start is
    # ignored by the manager too; the user sends it again.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, MANAGER_SIGNALS)
    ignored = {}
    if method == "spawn":
        for sig in (signal.SIGINT, *CONTROL_SIGNALS):
            ignored[sig] = signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def exit_state(child: Child, code: int | None) -> State:
    if child.stopping:
        return State.JOINED if code == 0 else State.TERMINATED
    if code == 0 and not child.entry.server:
        return State.COMPLETED
    return State.FAILED


def cause(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"

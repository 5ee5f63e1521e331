"""``ProcessGroup``: the manager of every child process, on one asyncio loop.

Design note
-----------
The manager reacts to events only: each child's pipe (messages) and process
sentinel (exit) are registered as readers on the loop, and SIGINT/SIGTERM are loop
signal handlers that just set the stop event. Nothing polls.

Start-up: every server worker is started, then the manager waits for all of their
``Ack`` messages under one deadline (``ack_timeout``, by default
``THRESHOLD`` tenths of a second). A worker that reports ``Failed``, exits, or is
still silent at the deadline fails the whole start: the manager logs which one and
why, stops every child and returns exit code 1.

Stop: every live child gets ``Stop`` on its pipe and has ``graceful_timeout`` plus
a short margin (for its stop listeners) to exit; then it is killed with a warning.
A second signal kills what is left at once.

While ``start()`` runs, SIGINT and SIGTERM are blocked in the manager's thread; a
fork or forkserver child inherits that mask and unblocks the signals once its own
handlers are in place, so a signal during its start-up is delayed, not lost. A
spawn child does not inherit the mask, so it starts with SIGINT ignored instead;
either way a Ctrl+C during interpreter start-up is no KeyboardInterrupt traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from typing import Any

import attrs

from . import start_methods
from .config import RunOptions
from .errors import StartFailedError
from .logs import MAIN_NAME
from .messages import Ack, Failed, Stop
from .state import ProcessEntry, State, now
from .worker import STOP_SIGNALS, WorkerSpec, worker_main

log = logging.getLogger("runtime")

STOP_MARGIN = 3.0  # seconds a stopping child gets beyond the graceful timeout

# The manager's ends of the children's pipes. A forked child would otherwise keep
# copies of its siblings' ends open, and a sibling would then never see its pipe
# close when the manager dies.
_manager_ends: set[Connection] = set()


def _close_manager_ends() -> None:
    for conn in _manager_ends:
        conn.close()
    _manager_ends.clear()


os.register_at_fork(after_in_child=_close_manager_ends)


@attrs.define(eq=False)
class _Child:
    name: str
    process: BaseProcess
    conn: Connection
    entry: ProcessEntry
    acked: asyncio.Future[None]
    exited: asyncio.Future[int]
    stopping: bool = False
    failure: Failed | None = None

    @property
    def pid(self) -> int:
        return self.process.pid or 0


class ProcessGroup:
    """Starts, acknowledges, watches and stops the runtime's processes."""

    THRESHOLD = 300  # ack deadline in tenths of a second

    def __init__(
        self,
        context: BaseContext,
        sock: socket.socket,
        options: RunOptions,
    ) -> None:
        self.context = context
        self.method = context.get_start_method()
        self.sock = sock
        self.spec: WorkerSpec | None = None
        self.options = options
        self.entries: dict[str, ProcessEntry] = {
            MAIN_NAME: ProcessEntry(
                server=False, state=State.ACKED, pid=os.getpid(), start_at=now()
            )
        }
        self._live: dict[str, _Child] = {}
        self._stop = asyncio.Event()
        self._signals = 0
        self.exit_code = 0

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        """Every process's state entry, keyed by process name."""
        return {name: entry.as_dict() for name, entry in self.entries.items()}

    def watch_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def stop(self, exit_code: int = 0) -> None:
        """Ask the group to stop; the highest exit code asked for wins."""
        self.exit_code = max(self.exit_code, exit_code)
        self._stop.set()

    async def unless_stopped(self, work: Awaitable[None]) -> bool:
        """Await ``work`` unless the group is asked to stop first (then cancel it).

        Returns True if ``work`` finished; raises what it raised.
        """
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
            return False
        task.result()
        return True

    async def run(
        self, spec: WorkerSpec, on_ready: Callable[[], Awaitable[None]]
    ) -> int:
        """Start the server workers, serve until stopped, stop; return exit code."""
        self.spec = spec
        try:
            if not self._stop.is_set() and await self._start_servers():
                await self._ready(on_ready)
                await self._stop.wait()
        finally:
            await self._stop_all()
        return self.exit_code

    async def _ready(self, on_ready: Callable[[], Awaitable[None]]) -> None:
        log.info(
            "Ready: %d worker(s) serving (start method %s)",
            self.options.workers,
            self.method,
        )
        try:
            await self.unless_stopped(on_ready())
        except Exception:
            log.exception("A main_process_ready listener failed; stopping")
            self.stop(1)

    async def _start_servers(self) -> bool:
        if self.method == "fork":
            start_methods.warn_if_threaded()
        children = []
        try:
            for i in range(self.options.workers):
                children.append(self._start(f"Runtime-Server-{i}-0"))
        except StartFailedError as exc:
            log.error("%s; stopping", exc)
            self.stop(1)
            return False
        return await self._await_acks(children)

    def _start(self, name: str) -> _Child:
        loop = asyncio.get_running_loop()
        ours, theirs = self.context.Pipe()
        entry = self.entries.setdefault(name, ProcessEntry(server=True))
        process = self.context.Process(
            target=worker_main, name=name, args=(self.spec, self.sock, theirs)
        )
        entry.state = State.STARTING
        _manager_ends.add(ours)
        try:
            with _quiet_child_start(self.method):
                process.start()
        except Exception as exc:
            entry.state = State.FAILED
            _manager_ends.discard(ours)
            ours.close()
            raise StartFailedError(f"could not start {name}: {exc!r}") from exc
        finally:
            theirs.close()
        entry.state, entry.pid, entry.start_at = State.STARTED, process.pid, now()
        entry.starts += 1
        child = _Child(
            name, process, ours, entry, loop.create_future(), loop.create_future()
        )
        self._live[name] = child
        loop.add_reader(ours.fileno(), self._on_message, child)
        loop.add_reader(process.sentinel, self._on_exit, child)
        log.info("Started %s (pid %d)", name, child.pid)
        return child

    async def _await_acks(self, children: list[_Child]) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.ack_timeout
        stopped = asyncio.ensure_future(self._stop.wait())
        pending = {c.acked for c in children}
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending | {stopped},
                    timeout=deadline - loop.time(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                pending.discard(stopped)
                if stopped in done:
                    return False
                if not done:
                    self._ack_timed_out(children)
                    return False
            return True
        finally:
            stopped.cancel()

    def _ack_timed_out(self, children: list[_Child]) -> None:
        for child in children:
            if not child.acked.done():
                log.error(
                    "%s (pid %d) did not ack within %.1f s; stopping. Raise the "
                    "deadline with ProcessGroup.THRESHOLD (tenths of a second), "
                    "rt.config.ACK_TIMEOUT or --ack-timeout if start-up is slow",
                    child.name,
                    child.pid,
                    self.options.ack_timeout,
                )
        self.stop(1)

    def _on_message(self, child: _Child) -> None:
        try:
            while child.conn.poll():
                self._handle(child, child.conn.recv())
        except (EOFError, OSError):
            self._forget_pipe(child)

    def _handle(self, child: _Child, message: object) -> None:
        if isinstance(message, Ack) and not child.acked.done():
            child.entry.state = State.ACKED
            child.acked.set_result(None)
            log.info("%s (pid %d) acked", child.name, child.pid)
        elif isinstance(message, Failed):
            child.failure = message
            detail = f"\n{message.traceback.rstrip()}" if message.traceback else ""
            log.error(
                "%s (pid %d) failed to start: %s%s",
                child.name,
                child.pid,
                message.error,
                detail,
            )
        else:
            log.warning("%s sent an unexpected message: %r", child.name, message)

    def _forget_pipe(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        if not child.conn.closed:
            loop.remove_reader(child.conn.fileno())
            child.conn.close()
        _manager_ends.discard(child.conn)

    def _on_exit(self, child: _Child) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.process.sentinel)
        self._on_message(child)  # read what it sent before exiting
        self._forget_pipe(child)
        child.process.join()  # the sentinel fired: this reaps at once
        code = child.process.exitcode
        del self._live[child.name]
        child.entry.state = _exit_state(child, code)
        child.exited.set_result(code)
        self._log_exit(child, code)
        if not child.stopping:
            self.stop(1)

    def _log_exit(self, child: _Child, code: int | None) -> None:
        cause = _cause(code)
        if child.stopping:
            level = logging.INFO if code == 0 else logging.WARNING
            log.log(level, "%s (pid %d) stopped (%s)", child.name, child.pid, cause)
        elif not child.acked.done():
            if child.failure is None:
                log.error(
                    "%s (pid %d) %s before its ack; if it printed a traceback above "
                    "while importing, fix that; if the script calls run() at module "
                    "level, move it under `if __name__ == '__main__':`",
                    child.name,
                    child.pid,
                    cause,
                )
        elif code == -signal.SIGKILL:
            log.error(
                "%s (pid %d) was killed by SIGKILL; if nobody sent it, the system "
                "may be out of memory",
                child.name,
                child.pid,
            )
        else:
            log.error("%s (pid %d) died (%s)", child.name, child.pid, cause)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("Stopping on %s", sig.name)
            self.stop(0)
            return
        log.warning("Second stop signal (%s): killing every process now", sig.name)
        self.exit_code = max(self.exit_code, 1)
        for child in list(self._live.values()):
            child.stopping = True
            child.process.kill()

    async def _stop_all(self) -> None:
        children = list(self._live.values())
        for child in children:
            child.stopping = True
            with contextlib.suppress(OSError):
                child.conn.send(Stop())
        if not children:
            return
        limit = self.options.graceful_timeout + STOP_MARGIN
        _, late = await asyncio.wait({c.exited for c in children}, timeout=limit)
        for child in children:
            if not child.exited.done():
                log.warning(
                    "%s (pid %d) did not stop within %.1f s; killing it",
                    child.name,
                    child.pid,
                    limit,
                )
                child.process.kill()
        if late:
            await asyncio.wait(late)


def _exit_state(child: _Child, code: int | None) -> State:
    if child.stopping:
        return State.JOINED if code == 0 else State.TERMINATED
    if code == 0 and not child.entry.server:
        return State.COMPLETED
    return State.FAILED


def _cause(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@contextlib.contextmanager
def _quiet_child_start(method: str) -> Iterator[None]:
    # Blocked signals are inherited by fork and forkserver children; a spawn child
    # starts with an empty mask, so SIGINT is ignored instead (ignored dispositions
    # survive exec). A SIGINT landing in this window of a few milliseconds is lost
    # by the manager too; the user presses Ctrl+C again.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    handler = (
        signal.signal(signal.SIGINT, signal.SIG_IGN) if method == "spawn" else None
    )
    try:
        yield
    finally:
        if handler is not None:
            signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

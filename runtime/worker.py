"""The server worker: the entry point of each worker process, and the serving
lifecycle it shares with single-process mode.

Design note
-----------
A worker process, whatever its start method:

1. forgets the signal state it may have inherited (a forked child of 3.11 still
   points its signal wakeup fd at the manager's loop) and never touches the
   manager's loop object: closing it would close the manager's epoll instance;
2. finds its Runtime by name (spawn and forkserver re-imported the user's module);
3. runs a fresh uvloop loop: installs its signal handlers, then unblocks SIGINT and
   SIGTERM, which the manager kept blocked while starting it so that a signal
   during interpreter start-up waits for these handlers;
4. before_server_start, start serving, after_server_start, then sends ``Ack``;
5. on ``Stop``, SIGINT, SIGTERM or the manager's end of the pipe closing: runs
   before_server_stop, drains (see ``serving``), after_server_stop, and exits 0.
   A second signal stops at once. A failure before the ack is reported with
   ``Failed`` and the process exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import attrs
import uvloop

from . import logs, pidfile, privileges, serving, sockets, systemd, titles
from .children import (
    CONTROL_SIGNALS,
    MANAGER_SIGNALS,
    STOP_SIGNALS,
    StopSignals,
    die_with_parent,
)
from .config import RunOptions
from .errors import RuntimeErrorBase, StartupError, TargetError
from .health import WorkerHealth
from .messages import (
    Ack,
    Failed,
    Reply,
    StateSeen,
    StateTable,
    Stop,
    Stopping,
)
from .multiplexer import Multiplexer

if TYPE_CHECKING:
    from .app import Runtime

log = logging.getLogger("runtime")


@attrs.frozen
class WorkerSpec:
    """What a worker process needs to find and serve its runtime."""

    runtime_name: str
    module: str
    target: str | None
    options: RunOptions
    shared: dict[str, Any]
    reloaded: tuple[str, ...] = ()  # the changed files, if a reload started it
    beat: Any = None  # shared double: the loop's latest time.monotonic() (health.py)
    log: logs.LogSettings = logs.LogSettings()


def worker_main(spec: WorkerSpec, sock: socket.socket, conn: Connection) -> None:
    """Process entry point of a server worker."""
    titles.set_title(multiprocessing.current_process().name)
    _forget_inherited_signals()
    die_with_parent()  # a SIGKILLed manager leaves no worker behind
    try:
        from .loader import find_runtime

        runtime = find_runtime(spec)
        # After the import: logging the user's module set up there counts.
        logs.configure(spec.log, child=True)
        name = multiprocessing.current_process().name
        runtime.enter_worker(spec.shared, Multiplexer(conn, name))
        runtime.config.RELOADED_FILES = spec.reloaded
        runtime.options = spec.options
    except RuntimeErrorBase as exc:
        # An import of the user's code that failed keeps its traceback.
        cause = exc.__cause__ if isinstance(exc, TargetError) else None
        _report(conn, exc, "".join(traceback.format_exception(cause)) if cause else "")
        sys.exit(1)
    except BaseException as exc:
        _report(conn, exc, traceback.format_exc())
        sys.exit(1)
    lifecycle = ServingLoop(runtime, sock, spec.options, mux=runtime.m, beat=spec.beat)
    code = uvloop.run(lifecycle.run())
    for sig in STOP_SIGNALS:  # the loop is gone: a late signal must not interrupt
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


def run_single(runtime: Runtime, options: RunOptions) -> int:
    """Serve in this process only: no manager, same listeners and shutdown."""
    sock = sockets.listen(options)
    try:
        log.info("Listening on %s (single process)", sockets.describe(sock))
        titles.set_title(f"single process [{runtime.name}]")
        with pidfile.held(options.pid_file):
            identity = privileges.resolve(options.user, options.group)
            privileges.drop(identity, options.uds if options.fd is None else None)
            return uvloop.run(_single(runtime, sock, options))
    finally:
        sockets.close(sock, options)


async def _single(runtime: Runtime, sock: socket.socket, options: RunOptions) -> int:
    try:
        await runtime.main_process_start_listeners(single=True)
    except Exception:
        log.exception("A main_process_start listener failed; not starting")
        return 1
    notify = systemd.Notifier.from_environment()
    notify.start_watchdog(asyncio.get_running_loop())
    try:

        async def ready() -> None:
            notify.ready("serving in a single process")
            await runtime.listeners.run("main_process_ready", runtime)

        return await ServingLoop(runtime, sock, options, on_ready=ready).run()
    finally:
        notify.stopping()
        notify.close()
        try:
            await runtime.listeners.run("main_process_stop", runtime)
        except Exception:
            log.exception("A main_process_stop listener failed")


def _forget_inherited_signals() -> None:
    # SIGINT stays ignored until the loop's handlers are in place (see
    # children.py); the control signals are the manager's business only.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGINT, *CONTROL_SIGNALS):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _report(conn: Connection, exc: BaseException, trace: str) -> None:
    try:
        conn.send(Failed(os.getpid(), f"{type(exc).__name__}: {exc}", trace))
    except OSError:
        pass


class ServingLoop:
    """Start, serve and drain one server on ``sock``, with listeners and signals."""

    def __init__(
        self,
        runtime: Runtime,
        sock: socket.socket,
        options: RunOptions,
        *,
        mux: Multiplexer | None = None,
        on_ready: Callable[[], Awaitable[None]] | None = None,
        beat: Any = None,
    ) -> None:
        self.runtime = runtime
        self.sock = sock
        self.options = options
        self.mux = mux
        self.on_ready = on_ready
        self.signals = StopSignals()
        self.server: serving.Server | None = None
        self.health = WorkerHealth(options, mux.send, beat) if mux is not None else None

    async def run(self) -> int:
        self.stop = asyncio.Event()
        self.main_task = asyncio.current_task()
        self._watch()
        try:
            return await self._lifecycle()
        except asyncio.CancelledError:
            if self.signals.count < 2:
                raise
            if self.server is not None:
                await self.server.drain(0, forced=True)  # close every connection
            return 1

    async def _lifecycle(self) -> int:
        starting = asyncio.ensure_future(self._start())
        stopping = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            await asyncio.wait({starting})
            stopping.cancel()
            log.info("Stopped before serving")
            return 0
        if starting.exception() is not None:
            stopping.cancel()
            self._failed(starting.exception())
            return 1
        code = 0 if self.stop.is_set() else await self._serve(stopping)
        await self._stop_serving()
        return code

    async def _start(self) -> None:
        try:
            self.server = serving.build(
                self.runtime.kind, self.runtime.target, self.options
            )
            if self.health is not None and self.health.request_limit:
                self.server.on_request = self.health.on_request
            await self.runtime.listeners.run("before_server_start", self.runtime)
            await self.server.start(self.sock)
            await self.runtime.listeners.run("after_server_start", self.runtime)
        except SystemExit as exc:
            raise StartupError(f"start-up called exit({exc.code})") from exc

    async def _serve(self, stopping: asyncio.Future[Any]) -> int:
        self._ack()
        if self.on_ready is not None:
            try:
                await self.on_ready()
            except Exception:
                log.exception("A main_process_ready listener failed; stopping")
                stopping.cancel()
                return 1
        assert self.server is not None
        finished = self.server.finished
        await asyncio.wait({stopping, finished}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if finished.done() and finished.exception() is not None:
            log.error("The server stopped with an error", exc_info=finished.exception())
            return 1
        return 0

    async def _stop_serving(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.graceful_timeout
        if self.health is not None:
            self.health.stop()
        await self._call("before_server_stop")
        assert self.server is not None
        try:
            await self.server.drain(deadline)
            await self.server.close()
        except Exception:
            log.exception("Draining the server failed")
        await self._call("after_server_stop")
        log.info("Stopped")

    async def _call(self, event: str) -> None:
        try:
            await self.runtime.listeners.run(event, self.runtime)
        except Exception:
            log.exception("A %s listener failed", event)

    def _ack(self) -> None:
        log.info("Serving")
        if self.mux is not None:
            self.mux.send(Ack(os.getpid(), own_logging=logs.user_configured()))
        if self.health is not None:
            self.health.start()

    def _failed(self, exc: BaseException) -> None:
        if self.mux is None:
            log.error("Start-up failed", exc_info=exc)
            return
        trace = "".join(traceback.format_exception(exc))
        self.mux.send(Failed(os.getpid(), f"{type(exc).__name__}: {exc}", trace))

    def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        if self.mux is None:  # a single process: no workers to restart or scale
            for sig in CONTROL_SIGNALS:
                loop.add_signal_handler(sig, self._no_workers, sig)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, MANAGER_SIGNALS)
        if self.mux is not None:
            loop.add_reader(self.mux.fileno(), self._on_control)
            # uvloop made the pipe non-blocking; multiprocessing's Connection
            # needs it blocking, or a large message is cut in half.
            os.set_blocking(self.mux.fileno(), True)

    def _on_signal(self, sig: signal.Signals) -> None:
        count = self.signals.hit()
        if count == 0 and self.mux is None:  # a worker's repeats are the manager's
            log.info(self.signals.repeat_message(sig))
        if count == 1:
            log.info("Stopping on %s", sig.name)
            self.stop.set()
            if self.mux is not None:
                with contextlib.suppress(OSError):
                    self.mux.send(Stopping(sig.name))
        elif count == 2:
            log.warning("Second stop signal (%s): stopping at once", sig.name)
            if self.main_task is not None:
                self.main_task.cancel()

    def _no_workers(self, sig: signal.Signals) -> None:
        log.warning(
            "%s does nothing in single-process mode: there are no workers to "
            "restart or scale",
            sig.name,
        )

    def _on_control(self) -> None:
        assert self.mux is not None
        try:
            for message in self.mux.received():
                self._handle(message)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(self.mux.fileno())
            if not self.stop.is_set():
                log.warning("The manager process is gone; stopping")
                self.stop.set()

    def _handle(self, message: object) -> None:
        assert self.mux is not None
        if isinstance(message, Stop):
            self.stop.set()
        elif isinstance(message, StateTable):
            self.mux.update_table(message.entries)
            self.mux.send(StateSeen())
        elif isinstance(message, Reply):
            self.mux.replied(message)

"""``ProcessGroup``: the manager of every child process, on one asyncio loop.

Design note
-----------
The manager reacts to events only: each child's pipe (messages) and its exit (a
pidfd, or the process sentinel) are registered as readers on the loop, and
signals are loop signal handlers that only record a request. Nothing polls.

Start-up: every server worker is started, then the manager waits for all of their
``Ack`` messages under one deadline (``ack_timeout``, by default ``THRESHOLD``
tenths of a second). A worker that reports ``Failed``, exits, or is still silent
at the deadline fails the whole start: the manager logs which one and why, stops
every child and returns exit code 1.

Serving: server workers live in numbered slots. Restarts, scaling and crash
respawns change which process fills a slot; they are carried out one at a time by
the conductor (``restarts.py``). A worker that dies while serving is respawned at
once; one that dies again soon after starting waits with exponential backoff, and
after ``crash_loop_limit`` such deaths in a row the group stops with exit code 1
(with reload on, the slot waits for the next code change instead).
A serving worker whose beats stop (a blocked loop) is stopped, killed if need be
and replaced; one that reached a recycling limit is replaced without downtime
(see ``health.py``).

The state table (``workers``) has one entry per process. It is pushed to the
server workers (for ``rt.m``) whenever it changes, at most one copy in flight per
worker, so a worker that stops reading can never block the manager.

Readiness (``readiness()``, which ``/readyz`` and systemd's ``STATUS=`` report):
started, not stopping, and every slot that has served has an acked worker. Under
systemd the group says ``READY=1`` once the first acks are in, ``RELOADING=1``
and ``READY=1`` around each requested restart (recycling is routine and says
nothing) and ``STOPPING=1`` when it stops (``systemd.py``).

Stop: every live child gets ``Stop`` on its pipe and has ``graceful_timeout`` plus
a short margin (for its stop listeners) to exit; then it is killed with a warning.
A second stop signal kills what is left at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Iterable
from multiprocessing.context import BaseContext
from typing import Any

import attrs

from . import logs, reloader, start_methods, systemd
from .children import (
    CONTROL_SIGNALS,
    STOP_SIGNALS,
    Child,
    Slot,
    StopSignals,
    cause,
    exit_state,
    running,
    start_process,
)
from .config import RunOptions
from .custom import CustomSpec, custom_main, custom_spec
from .errors import ConfigError, GroupNotRunningError, StartFailedError
from .health import HANG_KILL_GRACE, HangWatch
from .logs import MAIN_NAME, LogRelay, LogSettings
from .messages import (
    Ack,
    Failed,
    ManageRequest,
    Recycle,
    Reload,
    Reply,
    RestartRequest,
    ScaleRequest,
    StateSeen,
    StateTable,
    StateUpdate,
    Stop,
    Stopping,
    TerminateRequest,
)
from .multiplexer import check_restart_arguments, check_scale, split_names
from .restarts import Conductor
from .state import SYSTEM_KEYS, ProcessEntry, State, now, record_exit
from .worker import WorkerSpec, worker_main

log = logging.getLogger("runtime")

STOP_MARGIN = 3.0  # seconds a stopping child gets beyond the graceful timeout
QUICK_DEATH = 10.0  # a process dying sooner after its start counts toward a loop
BACKOFF_FIRST = 0.5  # seconds before the second quick respawn; doubles each time
BACKOFF_MAX = 30.0
SELF_STOP_GRACE = 0.5  # seconds to wait for the manager's own stop signal
RELOADER = f"Runtime-{reloader.NAME}-0"


class ProcessGroup:
    """Starts, acknowledges, watches, restarts, scales and stops the processes."""

    THRESHOLD = 300  # ack deadline in tenths of a second

    def __init__(
        self, context: BaseContext, sock: socket.socket, options: RunOptions
    ) -> None:
        self.context = context
        self.method = context.get_start_method()
        self.sock = sock
        self.options = options
        self.spec: WorkerSpec | None = None
        self.reload_spec: reloader.ReloadSpec | None = None
        self.reloaded: tuple[str, ...] = ()  # the files of the latest reload
        self.size = options.workers
        self.slots: dict[int, Slot] = {}
        # The last generation of each slot index ever used, so that a slot
        # scaled away and added again never reuses a worker's name.
        self._generations: dict[int, int] = {}
        self.customs: dict[str, CustomSpec] = {}  # by process name
        self.entries: dict[str, ProcessEntry] = {
            MAIN_NAME: ProcessEntry(
                server=False,
                state=State.ACKED,
                pid=os.getpid(),
                start_at=now(),
                starts=1,
            )
        }
        self.log = LogSettings.of(options)  # what children log with
        self.log_relay: LogRelay | None = None  # carries it to one file
        self.notify = systemd.Notifier.from_environment()
        self._stopping_told = False
        self.exit_code = 0
        self.conductor = Conductor(self)
        self.hangs = HangWatch(options.hang_timeout, self._on_hung)
        self._live: dict[str, Child] = {}
        self._stop = asyncio.Event()
        self._signals = StopSignals()
        self._serving = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._table_version = 0
        self._broadcast_due = False
        self._last_starts: dict[str, int] = {}
        self._logging_checked = False

    # -- the public API; safe to call from any thread while the group runs --

    @property
    def workers(self) -> dict[str, dict[str, Any]]:
        """Every process's state entry, keyed by process name."""
        return {name: entry.as_dict() for name, entry in self.entries.items()}

    @property
    def serving(self) -> bool:
        """Started, and not stopping."""
        return self._serving and not self._stop.is_set()

    def readiness(self) -> tuple[bool, str]:
        """Whether the group serves at full strength, and a line saying why.

        Ready: started, not stopping, and every slot that has ever served has an
        acked worker. A slot a scale-up is still starting does not count yet, so
        scaling up never makes a serving group unready; a crashed worker, or one
        restarted stop-then-start, does until its successor acks.
        """
        slots = [s for s in self.slots.values() if s.acked_once]
        ready = sum(1 for s in self.slots.values() if s.ready)
        wanted = len(slots) if self._serving else self.size  # starting: all of them
        counts = f"{ready}/{wanted} server worker(s) ready"
        if self._stop.is_set():
            return False, f"stopping; {counts}"
        if not self._serving:
            return False, f"starting; {counts}"
        if ready < len(slots) or not slots:
            return False, counts
        return True, counts

    def restart(
        self,
        process_names: str | Iterable[str] | None = None,
        *,
        all_workers: bool = False,
        zero_downtime: bool = False,
    ) -> None:
        """Restart named server workers (comma-separated or a list), or all.

        Stop-then-start by default; with ``zero_downtime`` each replacement must
        ack before its predecessor drains, one slot at a time.
        """
        names = split_names(process_names)
        indexes = self._restart_targets(names, all_workers, zero_downtime)
        self._call(self.conductor.restart, indexes, zero_downtime)

    def scale(self, workers: int) -> None:
        """Run ``workers`` server workers from now on (started or drained)."""
        workers = self._check_scale(workers)
        self._call(self._scale, workers)

    def terminate(self) -> None:
        """Stop the whole group, as SIGTERM would."""
        self._call(self.stop, 0)

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
    ) -> None:
        """Run ``func(**kwargs)`` as custom process(es) ``Runtime-<name>-<i>``.

        See ``custom.py`` for the flags. Raises ConfigError for bad arguments, a
        name in use, or a target the start method cannot send to a process.
        """
        spec = custom_spec(
            name,
            func,
            kwargs,
            transient=transient,
            restartable=restartable,
            tracked=tracked,
            workers=workers,
            auto_start=auto_start,
            method=self.method,
        )
        taken = [n for n in spec.process_names() if n in self.entries]
        if taken or any(s.name == name for s in self.customs.values()):
            raise ConfigError(
                f"a custom process named {name!r} exists already; give each its "
                f"own name"
            )
        self._call(self._add_custom, spec)

    def _add_custom(self, spec: CustomSpec) -> None:
        for process_name in spec.process_names():
            self.customs[process_name] = spec
            self.entries[process_name] = ProcessEntry(server=False)
            if spec.auto_start:
                self.start_custom(process_name)
        self.changed()

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._stop.is_set():
            raise GroupNotRunningError(
                "the group is not serving; call this while run() serves, for "
                "example from a main_process_ready listener"
            )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            fn(*args)
        else:
            loop.call_soon_threadsafe(fn, *args)

    def _restart_targets(
        self, names: list[str], all_workers: bool, zero_downtime: bool
    ) -> list[int | str]:
        check_restart_arguments(names, all_workers, zero_downtime)
        if all_workers:
            transient = [n for n, spec in self.customs.items() if spec.transient]
            return [*sorted(self.slots), *transient]
        if not names:
            raise ValueError(
                "restart() needs process names (comma-separated) or all_workers=True"
            )
        current: dict[str, int | str] = {
            slot.child.name: index
            for index, slot in self.slots.items()
            if slot.child is not None and slot.serving
        }
        current.update((n, n) for n in self.customs if n in self.entries)
        unknown = [name for name in names if name not in current]
        if unknown:
            raise ValueError(
                f"no process named {', '.join(map(repr, unknown))}; current "
                f"ones: {', '.join(sorted(current)) or 'none'}"
            )
        fixed = [
            n for n in names if n in self.customs and not self.customs[n].restartable
        ]
        if fixed:
            raise ValueError(
                f"{', '.join(fixed)} cannot be restarted: manage() it with "
                f"restartable=True"
            )
        return [current[name] for name in dict.fromkeys(names)]

    def _check_scale(self, workers: object) -> int:
        check_scale(workers)
        if workers == self.size:
            raise ValueError(f"the group already runs {workers} server worker(s)")
        return workers

    def _scale(self, workers: int) -> None:
        self.size = workers
        self.conductor.scale(workers)

    # -- running --

    def watch_signals(self) -> None:
        self._loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS + CONTROL_SIGNALS:
            self._loop.add_signal_handler(sig, self._on_signal, sig)
        self.notify.start_watchdog(self._loop)

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
                self._serving = True
                self._recheck_recycles()  # limits reached while starting
                if self.reload_spec is not None:
                    self._start_reloader(self.reload_spec)
                self.conductor.start()
                await self._ready(on_ready)
                await self._stop.wait()
        finally:
            await self.shutdown()
        return self.exit_code

    async def shutdown(self) -> None:
        """Stop every child, whatever state the group is in; safe to repeat."""
        self._serving = False
        if not self._stopping_told:
            self._stopping_told = True
            self.notify.stopping()
        # New connections are refused from now on instead of waiting in the
        # backlog of a socket nobody will accept from again.
        self.sock.close()
        await self.conductor.close()
        await self._stop_all()
        self.notify.close()

    async def _ready(self, on_ready: Callable[[], Awaitable[None]]) -> None:
        serving = sum(1 for s in self.slots.values() if s.serving)
        log.info("Ready: %d worker(s) serving (start method %s)", serving, self.method)
        self.notify.ready(self.readiness()[1])
        try:
            await self.unless_stopped(on_ready())
        except Exception:
            log.exception("A main_process_ready listener failed; stopping")
            self.stop(1)

    async def _start_servers(self) -> bool:
        if self.method == "fork":
            start_methods.warn_if_threaded()
        try:
            children = [self.spawn(self.add_slot()) for _ in range(self.size)]
        except StartFailedError as exc:
            log.error("%s; stopping", exc)
            self.stop(1)
            return False
        return await self._await_first_acks(children)

    async def _await_first_acks(self, children: list[Child]) -> bool:
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
                    self._first_acks_timed_out(children)
                    return False
            return True
        finally:
            stopped.cancel()

    def _first_acks_timed_out(self, children: list[Child]) -> None:
        for child in children:
            if not child.acked.done():
                log.error(
                    "%s did not ack within %g s; stopping. If start-up is that "
                    "slow, raise the deadline: --ack-timeout, "
                    "rt.config.ACK_TIMEOUT or ProcessGroup.THRESHOLD (in tenths "
                    "of a second)",
                    child.label(),
                    self.options.ack_timeout,
                )
        self.stop(1)

    def _start_reloader(self, spec: reloader.ReloadSpec) -> None:
        self._add_custom(
            CustomSpec(
                reloader.NAME,
                reloader.watch,
                {"spec": spec},
                transient=False,
                restartable=False,
                tracked=True,
                workers=1,
                auto_start=True,
                pipe=True,
            )
        )

    def _reload(self, paths: tuple[str, ...]) -> None:
        if self._stop.is_set():
            return
        log.info("Reloading: %s changed", reloader.describe(paths))
        self.reloaded = paths
        self.restart(all_workers=True, zero_downtime=True)
        for slot in self.slots.values():
            if slot.parked:  # crash-looped on broken code: try the new code
                slot.parked, slot.streak = False, 0
                self.conductor.respawn(slot, 0)

    # -- verbs the conductor uses --

    def add_slot(self) -> Slot:
        index = next(i for i in range(len(self.slots) + 1) if i not in self.slots)
        slot = Slot(index, generation=self._generations.get(index, -1))
        self.slots[index] = slot
        return slot

    def spawn(self, slot: Slot) -> Child:
        """Start a server worker for ``slot``; it fills the slot if that is empty.

        Raises StartFailedError if the process could not be started.
        """
        assert self.spec is not None
        if slot.child is not None and not slot.serving:
            self.entries.pop(slot.child.name, None)  # its predecessor's entry
        name = slot.next_name()
        slot.starts += 1
        entry = self.entries[name] = ProcessEntry(server=True, starts=slot.starts)
        if slot.starts > 1:
            entry.restart_at = now()
        beat = self.hangs.new_cell(self.context)
        spec = attrs.evolve(self.spec, reloaded=self.reloaded, beat=beat)
        child = self._launch(entry, name, worker_main, (spec, self.sock), slot)
        child.beat = beat
        if slot.child is None or not slot.serving:
            slot.child = child
        return child

    def _launch(
        self,
        entry: ProcessEntry,
        name: str,
        target: Callable[..., None],
        args: tuple[Any, ...],
        slot: Slot | None = None,
        custom: CustomSpec | None = None,
    ) -> Child:
        """Start process ``name`` for ``entry`` and watch it; StartFailedError
        if it could not be started."""
        entry.state = State.STARTING
        try:
            process, conn = start_process(self.context, name, target, args)
        except StartFailedError:
            entry.state = State.FAILED
            self.changed()
            raise
        entry.state, entry.pid, entry.start_at = State.STARTED, process.pid, now()
        loop = asyncio.get_running_loop()
        child = Child(
            name,
            process,
            conn,
            entry,
            slot,
            loop.time(),
            loop.create_future(),
            loop.create_future(),
            custom=custom,
        )
        self._live[name] = child
        loop.add_reader(conn.fileno(), self._on_message, child)
        loop.add_reader(child.watch_exit(), self._on_exit, child)
        log.info("Started %s", child.label())
        self.changed()
        return child

    async def await_ack(self, child: Child) -> str | None:
        """None once ``child`` acked; otherwise why it did not."""
        timeout = self.options.ack_timeout
        await asyncio.wait(
            {child.acked, child.exited},
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if child.acked.done():
            return None
        if child.exited.done():
            why = child.failure.error if child.failure else cause(child.exited.result())
            return f"failed before its ack ({why})"
        return f"did not ack within {timeout:g} s"

    async def retire(self, child: Child) -> None:
        """Drain and stop ``child``; kill it if it outlives the grace period."""
        if not child.alive:
            return
        child.stopping = True
        self.hangs.forget(child)
        if child.custom is not None:
            child.process.terminate()
            limit = self.options.graceful_timeout
        else:
            child.send(Stop())
            # A worker that never acked has nothing to drain.
            limit = STOP_MARGIN
            if child.acked.done():
                limit += self.options.graceful_timeout
        await asyncio.wait({child.exited}, timeout=limit)
        if child.alive:
            log.warning("%s did not stop within %g s; killing it", child.label(), limit)
            if child.custom is not None:
                _kill_group(child.pid)
            child.process.kill()
            await asyncio.wait({child.exited})

    def live(self, name: str) -> Child | None:
        """The running process called ``name``, if any."""
        return self._live.get(name)

    def start_custom(self, name: str) -> Child | None:
        """Start custom process ``name``; None if it could not be started."""
        spec = self.customs[name]
        entry = self.entries[name] = ProcessEntry(server=False)
        previous = self._last_starts.get(name, 0)
        entry.starts = self._last_starts[name] = previous + 1
        if previous:
            entry.restart_at = now()
        options = self.options
        args = (
            spec.func,
            spec.kwargs,
            self.log,
            options.graceful_timeout,
            spec.pipe,
        )
        try:
            return self._launch(entry, name, custom_main, args, custom=spec)
        except StartFailedError as exc:
            log.error("%s", exc)
            return None

    def slot_failed(self, slot: Slot, child: Child, why: str) -> None:
        """Respawn ``slot`` after ``child`` died there: at once, later, or never."""
        lifetime = asyncio.get_running_loop().time() - child.started_at
        slot.streak = slot.streak + 1 if lifetime < QUICK_DEATH else 0
        if slot.streak >= self.options.crash_loop_limit and self.reload_spec:
            log.error(
                "Runtime-Server-%d kept failing: %d processes in a row ended or "
                "failed within %.0f s of starting; the last one, %s, %s. Waiting "
                "for a code change before starting it again",
                slot.index,
                slot.streak,
                QUICK_DEATH,
                child.label(),
                why,
            )
            slot.parked = True
            if all(s.parked for s in self.slots.values()):
                log.error(
                    "No server worker is serving: every one waits for a code "
                    "change; connections wait in the backlog until then"
                )
            return
        if slot.streak >= self.options.crash_loop_limit:
            log.error(
                "Runtime-Server-%d kept failing: %d processes in a row ended or "
                "failed within %.0f s of starting; the last one, %s, %s. Stopping "
                "the group.",
                slot.index,
                slot.streak,
                QUICK_DEATH,
                child.label(),
                why,
            )
            self.stop(1)
            return
        delay = 0.0
        if slot.streak:
            delay = min(BACKOFF_FIRST * 2 ** (slot.streak - 1), BACKOFF_MAX)
            log.warning(
                "Respawning Runtime-Server-%d in %.1f s (%d quick failure(s) in a row)",
                slot.index,
                delay,
                slot.streak,
            )
        self.conductor.respawn(slot, delay)

    def remove_slot(self, slot: Slot) -> None:
        self.slots.pop(slot.index, None)
        self._generations[slot.index] = slot.generation
        if slot.respawn is not None:
            slot.respawn.cancel()
        if slot.child is not None and not slot.child.alive:
            self.entries.pop(slot.child.name, None)
        self.changed()

    # -- events --

    def _on_message(self, child: Child) -> None:
        try:
            while child.conn.poll():
                self._handle(child, child.conn.recv())
        except (EOFError, OSError):
            self._forget_pipe(child)
        except Exception:
            # A message that cannot be unpickled or handled must not stop the
            # manager; the pipe stays in step, the message is dropped.
            log.exception("Dropped a message from %s that failed", child.label())

    def _handle(self, child: Child, message: object) -> None:
        if isinstance(message, Ack):
            self._acked(child)
            self._check_logging(child, message)
        elif isinstance(message, Failed):
            child.failure = message
            detail = f"\n{message.traceback.rstrip()}" if message.traceback else ""
            log.error("%s failed to start: %s%s", child.label(), message.error, detail)
        elif isinstance(message, Stopping):
            child.stopping = True
            child.stopped_by = message.signal
        elif isinstance(message, StateSeen):
            child.table_in_flight = False
            self._send_table(child)
        elif isinstance(message, StateUpdate):
            self._update_user_state(child, message)
        elif isinstance(message, Recycle):
            self._recycle(child, message.reason)
        elif isinstance(message, Reload) and child.name == RELOADER:
            self._reload(message.paths)
        else:
            self._request(child, message)

    def _acked(self, child: Child) -> None:
        if child.acked.done():
            return
        child.entry.state = State.ACKED
        child.acked.set_result(None)
        log.info("%s acked", child.label())
        if child.slot is not None:
            child.slot.acked_once = True
            self.hangs.watch(child)
        self.changed()

    def _check_logging(self, child: Child, ack: Ack) -> None:
        # Logging set up in the main process only (say, under the main guard)
        # reaches forked workers, not spawned ones: say so once.
        if ack.own_logging or self._logging_checked or self.log.config is not None:
            return
        self._logging_checked = True
        if logs.user_configured():
            log.warning(
                "Logging was set up in the main process only, so %s (%s) logs "
                "with the runtime's default handler instead. Pass the set-up as a "
                "log config (--log-config FILE, or log_config= a dictConfig dict) "
                "so that every process applies it",
                child.label(),
                self.method,
            )

    def _on_hung(self, child: Child, silent: float) -> None:
        log.critical(
            "%s has not answered for %.1f s (hang timeout %g s): its event loop "
            "is blocked. Stopping it and starting a new one",
            child.label(),
            silent,
            self.options.hang_timeout,
        )
        child.hung = True
        child.send(Stop())
        loop = asyncio.get_running_loop()
        loop.call_later(HANG_KILL_GRACE, self._kill_hung, child)

    def _kill_hung(self, child: Child) -> None:
        if child.alive:
            log.warning(
                "%s is still hung %g s later; killing it",
                child.label(),
                HANG_KILL_GRACE,
            )
            child.process.kill()

    def _recycle(self, child: Child, reason: str) -> None:
        """Replace ``child`` without downtime, now or once it fills its slot.

        A worker may reach a limit before the manager saw its ack, or while it
        is the new half of a rolling restart: the request waits on the child
        and is checked again whenever the table changes.
        """
        slot = child.slot
        if slot is None or child.stopping or self._stop.is_set():
            return
        if slot.child is not child or not child.acked.done() or not self._serving:
            child.recycle_reason = reason
            return
        child.recycle_reason = None
        log.info("Recycling %s: %s", child.label(), reason)
        self.conductor.restart([slot.index], True, announce=False)

    def _recheck_recycles(self) -> None:
        for child in list(self._live.values()):
            if child.recycle_reason is not None:
                self._recycle(child, child.recycle_reason)

    def _update_user_state(self, child: Child, message: StateUpdate) -> None:
        values = {k: v for k, v in message.values.items() if k not in SYSTEM_KEYS}
        child.entry.user.update(values)
        for key in message.removed:
            child.entry.user.pop(key, None)
        self.changed()

    def _request(self, child: Child, message: object) -> None:
        error = None
        try:
            self._carry_out(child, message)
        except Exception as exc:  # whatever it was, the caller gets an answer
            log.warning("Refused a request from %s: %s", child.label(), exc)
            error = f"{exc}" if isinstance(exc, ValueError) else f"{exc!r}"
        request_id = getattr(message, "request_id", None)
        if request_id is not None:
            child.send(Reply(request_id, error))

    def _carry_out(self, child: Child, message: object) -> None:
        if isinstance(message, RestartRequest):
            self.restart(
                list(message.names),
                all_workers=message.all_workers,
                zero_downtime=message.zero_downtime,
            )
        elif isinstance(message, ScaleRequest):
            self.scale(message.workers)
        elif isinstance(message, TerminateRequest):
            log.info("%s asked the group to stop", child.label())
            self.terminate()
        elif isinstance(message, ManageRequest):
            self.manage(message.name, message.func, message.kwargs, **message.options)
        else:
            raise ValueError(f"unknown request {message!r}")

    def _forget_pipe(self, child: Child) -> None:
        if not child.conn.closed:
            asyncio.get_running_loop().remove_reader(child.conn.fileno())
            child.close_pipe()

    def _on_exit(self, child: Child) -> None:
        asyncio.get_running_loop().remove_reader(child.exit_fd)
        self._on_message(child)  # read what it sent before exiting
        self._forget_pipe(child)
        code = child.reap()
        if self.method == "forkserver" and code == 255 and running(child.pid):
            log.error(
                "%s: the fork server that started it is gone, so its exit could "
                "not be observed; killing it",
                child.label(),
            )
            os.kill(child.pid, signal.SIGKILL)
        del self._live[child.name]
        self.hangs.forget(child)
        child.entry.state = exit_state(child, code)
        record_exit(child.entry, code)
        child.exited.set_result(code)
        self._log_exit(child, code)
        slot = child.slot
        if slot is not None and (
            slot.child is not child or self.slots.get(slot.index) is not slot
        ):
            self.entries.pop(child.name, None)  # replaced or removed: forget it
        self.changed()
        if child.custom is not None:
            _kill_group(child.pid)  # what it started and left behind
            if not child.custom.tracked:
                self._forget_untracked(child)
            return
        if child.stopped_by is not None and not self._stop.is_set():
            # The same signal is often on its way to the manager too (Ctrl+C
            # reaches the whole process group): decide once that had its chance.
            loop = asyncio.get_running_loop()
            loop.call_later(SELF_STOP_GRACE, self._after_self_stop, child)
            return
        if child.stopping:
            return
        if not self._serving:
            self.stop(1)  # start-up failed, or a worker died while starting up
        elif slot is not None and slot.child is child and child.hung:
            self.conductor.respawn(slot, 0)  # the manager ended it: no crash
        elif slot is not None and slot.child is child and child.acked.done():
            self.slot_failed(slot, child, cause(code))

    def _forget_untracked(self, child: Child) -> None:
        if self.entries.get(child.name) is child.entry:
            self.entries.pop(child.name)
        names = child.custom.process_names() if child.custom else []
        if not any(name in self.entries for name in names):
            for name in names:  # all of them ended: the name is free again
                self.customs.pop(name, None)

    def _after_self_stop(self, child: Child) -> None:
        if self._stop.is_set():
            return
        slot = child.slot
        if not self._serving:
            log.error(
                "%s stopped on its own %s while the group was starting; stopping",
                child.label(),
                child.stopped_by,
            )
            self.stop(1)
        elif slot is not None and slot.child is child and slot.index in self.slots:
            log.info(
                "%s stopped on its own %s; starting a new one",
                child.label(),
                child.stopped_by,
            )
            self.conductor.respawn(slot, 0)

    def _log_exit(self, child: Child, code: int | None) -> None:
        why = cause(code)
        if child.custom is not None and not child.stopping:
            if code == 0:
                log.info("%s completed", child.label())
            else:
                hint = " (restart it by name)" if child.custom.restartable else ""
                log.error("%s died (%s)%s", child.label(), why, hint)
            return
        if child.hung and not child.stopping:
            log.warning("%s ended after it hung (%s)", child.label(), why)
        elif child.stopping:
            expected = code in (0, -signal.SIGTERM, -signal.SIGINT)
            level = logging.INFO if expected else logging.WARNING
            log.log(level, "%s stopped (%s)", child.label(), why)
        elif not child.acked.done():
            if child.failure is not None or self._serving:
                log.info("%s exited (%s)", child.label(), why)
            else:
                log.error(
                    "%s %s before its ack; if it printed a traceback above while "
                    "importing, fix that; if the script calls run() at module "
                    "level, move it under `if __name__ == '__main__':`",
                    child.label(),
                    why,
                )
        elif code == 0:
            log.info("%s exited by itself; starting a new one", child.label())
        elif code == -signal.SIGKILL:
            log.error(
                "%s was killed by SIGKILL; if nobody sent it, the system may be "
                "out of memory",
                child.label(),
            )
        else:
            log.error("%s died (%s)", child.label(), why)

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig in CONTROL_SIGNALS:
            self._on_control_signal(sig)
            return
        count = self._signals.hit()
        if count == 0:
            log.info(self._signals.repeat_message(sig))
            return
        if count == 1:
            log.info("Stopping on %s", sig.name)
            self.stop(0)
            return
        log.warning("Second stop signal (%s): killing every process now", sig.name)
        self.exit_code = max(self.exit_code, 1)
        for child in list(self._live.values()):
            child.stopping = True
            child.process.kill()

    def _on_control_signal(self, sig: signal.Signals) -> None:
        try:
            if sig == signal.SIGHUP:
                log.info("SIGHUP: restarting every server worker, zero-downtime")
                self.restart(all_workers=True, zero_downtime=True)
            else:
                workers = self.size + (1 if sig == signal.SIGTTIN else -1)
                self.scale(workers)
                log.info("%s: scaling to %d server worker(s)", sig.name, workers)
        except (ValueError, GroupNotRunningError) as exc:
            log.warning("Ignored %s: %s", sig.name, exc)

    # -- the state table pushed to workers --

    def changed(self) -> None:
        """The state table changed; send it to the server workers soon."""
        self._table_version += 1
        if not self._broadcast_due:
            self._broadcast_due = True
            asyncio.get_running_loop().call_soon(self._broadcast)

    def _broadcast(self) -> None:
        self._broadcast_due = False
        self._recheck_recycles()
        if self.serving:
            self.notify.status(self.readiness()[1])
        for child in list(self._live.values()):
            self._send_table(child)

    def _send_table(self, child: Child) -> None:
        # One table in flight per worker: the next goes after its StateSeen.
        if (
            child.acked.done()
            and not child.table_in_flight
            and child.table_version < self._table_version
            and child.send(StateTable(self.workers))
        ):
            child.table_in_flight = True
            child.table_version = self._table_version

    # -- stopping --

    async def _stop_all(self) -> None:
        children = list(self._live.values())
        if children:
            await asyncio.gather(*(self.retire(child) for child in children))


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)

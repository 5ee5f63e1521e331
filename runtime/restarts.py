"""The conductor: restarts, scaling and respawns, one change at a time.

Design note
-----------
Every change of the group's shape goes through one task, so two changes never
race on a slot. Requests only record what is wanted and wake the task:

* respawns (a slot whose worker died) come first, as soon as their backoff
  delay has passed;
* then the latest scale request (only the newest size matters; a new slot
  whose first worker fails to start is dropped again, so a scale-up never
  turns a healthy group into a crash loop);
* then restarts, as one rolling job over the slots asked for.

Restart requests merge: a slot already waiting in the running job, or in the next
one, is restarted once however often it was asked for (zero-downtime wins if any
request asked for it). A slot whose restart has already begun is queued again for
the next job, so a request made after a process started loading code is never
satisfied by that older process.

Restarting one slot, stop-then-start (the default)::

    old: RESTARTING ─ drain ─ exit
                                  new: start ─ ack        (the slot is empty
                                                           in between)

Zero-downtime (``zero_downtime=True``)::

    old: RESTARTING ─────────────────── drain ─ exit
    new: start ─ ack (ack deadline) ─┘  (never fewer than N serving)

Slots are restarted one after the other. If a zero-downtime replacement fails or
misses its ack deadline, it is stopped, the old worker keeps serving, and the rest
of that rolling job is dropped with an error naming both processes. If a
stop-then-start replacement fails, the slot is empty: it is respawned like a
crashed worker, with backoff, and the rest of the job is dropped too, so the
slots not yet restarted keep their workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .errors import StartFailedError
from .state import State

if TYPE_CHECKING:
    from .children import Child, Slot
    from .group import ProcessGroup

log = logging.getLogger("runtime")


class Conductor:
    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self._wake = asyncio.Event()
        self._respawns: list[Slot] = []
        self._scale_to: int | None = None
        # slot index (or custom process name): zero_downtime
        self._restarts: dict[int | str, bool] = {}
        self._rolling: dict[int | str, bool] = {}  # the running job, not yet begun
        self._announce = False  # the next job was asked for, not a recycle
        self._task: asyncio.Task[None] | None = None

    # -- requests --

    def restart(
        self, indexes: list[int | str], zero_downtime: bool, announce: bool = True
    ) -> None:
        """Queue restarts; ``announce``: tell systemd the service reloads (not
        for recycling, which is routine)."""
        self._announce = self._announce or announce
        for index in indexes:
            if index in self._rolling:
                self._rolling[index] = self._rolling[index] or zero_downtime
            else:
                self._restarts[index] = (
                    self._restarts.get(index, False) or zero_downtime
                )
        self._wake.set()

    def scale(self, workers: int) -> None:
        self._scale_to = workers
        self._wake.set()

    def respawn(self, slot: Slot, delay: float) -> None:
        if delay <= 0:
            self._queue_respawn(slot)
            return
        loop = asyncio.get_running_loop()
        slot.respawn = loop.call_later(delay, self._queue_respawn, slot)

    def _queue_respawn(self, slot: Slot) -> None:
        slot.respawn = None
        self._respawns.append(slot)
        self._wake.set()

    # -- the task --

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for slot in self.group.slots.values():
            if slot.respawn is not None:
                slot.respawn.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    if not await self._step():
                        break
                except Exception:
                    log.exception("A restart, scale or respawn step failed")

    async def _step(self) -> bool:
        if self._respawns:
            await self._respawn(self._respawns.pop(0))
        elif self._scale_to is not None:
            workers, self._scale_to = self._scale_to, None
            await self._scale(workers)
        elif self._restarts:
            self._rolling, self._restarts = self._restarts, {}
            announce, self._announce = self._announce, False
            if announce:
                self.group.notify.reloading()
            try:
                await self._roll()
            finally:
                if announce and self.group.serving:
                    self.group.notify.ready(self.group.readiness()[1])
            if not self._restarts:
                self.group.reloaded = ()  # later starts are not of that reload
        else:
            return False
        return True

    # -- the work --

    async def _respawn(self, slot: Slot) -> None:
        if self.group.slots.get(slot.index) is not slot or slot.serving:
            return  # scaled away, or refilled by a restart meanwhile
        child = self._spawn(slot)
        if child is None:
            return
        why = await self.group.await_ack(child)
        if why is None:
            log.info("Respawned %s", child.label())
            return
        await self._failed_start(slot, child, why)

    async def _failed_start(self, slot: Slot, child: Child, why: str) -> None:
        log.error("%s %s", child.label(), why)
        await self.group.retire(child)
        if slot.child is child and slot.index in self.group.slots:
            self.group.slot_failed(slot, child, why)

    def _spawn(self, slot: Slot) -> Child | None:
        try:
            return self.group.spawn(slot)
        except StartFailedError as exc:
            log.error("%s; stopping", exc)
            self.group.stop(1)
            return None

    async def _scale(self, workers: int) -> None:
        slots = self.group.slots
        if workers > len(slots):
            added = [self.group.add_slot() for _ in range(workers - len(slots))]
            children = [c for c in map(self._spawn, added) if c is not None]
            results = await asyncio.gather(*map(self.group.await_ack, children))
            for child, why in zip(children, results, strict=True):
                if why is not None and child.slot is not None:
                    # A new slot that cannot start is dropped, not respawned:
                    # the group keeps the size that serves.
                    log.error("%s %s; not scaling up with it", child.label(), why)
                    self.group.remove_slot(child.slot)
                    await self.group.retire(child)
                    if self._scale_to is None:  # no newer size asked for
                        self.group.size = len(slots)
        elif workers < len(slots):
            removed = [slots[i] for i in sorted(slots)[workers:]]
            for slot in removed:
                self.group.remove_slot(slot)
            leaving = [s.child for s in removed if s.child is not None]
            await asyncio.gather(*map(self.group.retire, leaving))
        log.info("Scaled to %d server worker(s)", len(slots))

    async def _roll(self) -> None:
        if self.group.method == "fork" and any(
            isinstance(k, int) for k in self._rolling
        ):
            log.info(
                "Restarting forked workers: they run the code the manager imported "
                "at start-up, so changes on disk are not picked up (restart the "
                "whole program, or use the spawn or forkserver start method)"
            )
        while self._rolling:
            while self._respawns:
                await self._respawn(self._respawns.pop(0))
            index = next(iter(self._rolling))
            zero_downtime = self._rolling.pop(index)
            if isinstance(index, str):
                await self._restart_custom(index)
                continue
            slot = self.group.slots.get(index)
            if slot is None or not slot.serving:
                continue  # scaled away, or dead and about to be respawned fresh
            replace = self._replace if zero_downtime else self._stop_then_start
            if not await replace(slot) and self._rolling:
                log.error(
                    "Rolling restart stopped; not restarted: %s%s",
                    ", ".join(
                        f"Runtime-Server-{i}" if isinstance(i, int) else i
                        for i in self._rolling
                    ),
                    "; the next code change tries again"
                    if self.group.reload_spec is not None
                    else "",
                )
                self._rolling.clear()

    async def _stop_then_start(self, slot: Slot) -> bool:
        old = slot.child
        assert old is not None
        self._mark_restarting(old)
        await self.group.retire(old)
        new = self._spawn(slot)
        if new is None:
            return False
        why = await self.group.await_ack(new)
        if why is not None:
            await self._failed_start(slot, new, why)
            return False
        log.info("Restarted %s as %s", old.label(), new.label())
        return True

    async def _replace(self, slot: Slot) -> bool:
        old = slot.child
        assert old is not None
        self._mark_restarting(old)
        new = self._spawn(slot)
        if new is None:
            return False
        why = await self.group.await_ack(new)
        if why is not None:
            await self.group.retire(new)
            if old.alive:
                old.entry.state = State.ACKED
                self.group.changed()
            log.error(
                "Zero-downtime restart of %s failed: its replacement %s %s; "
                "the old worker keeps serving",
                old.label(),
                new.label(),
                why,
            )
            return False
        slot.child = new
        if not old.alive:  # it died while its replacement started
            self.group.entries.pop(old.name, None)
        await self.group.retire(old)
        log.info("Restarted %s as %s (zero-downtime)", old.label(), new.label())
        return True

    async def _restart_custom(self, name: str) -> None:
        if name not in self.group.customs:
            return
        old = self.group.live(name)
        if old is not None:
            self._mark_restarting(old)
            await self.group.retire(old)
        new = self.group.start_custom(name)
        if new is not None:
            log.info("Restarted %s", new.label())

    def _mark_restarting(self, child: Child) -> None:
        child.entry.state = State.RESTARTING
        self.group.changed()

"""Worker health: liveness beats, hung-loop detection and recycling limits.

Design note
-----------
Hung loops. A serving worker beats from its own event loop every
``beat_interval(hang_timeout)`` seconds (a quarter of the timeout, at most
``MAX_BEAT``): it writes ``time.monotonic()`` (one clock for every process on
the machine) into a shared double the manager gave it at spawn. The beat is a
loop callback, so Python code that blocks the loop (a ``time.sleep`` in a
handler, a long CPU-bound call) stops the beats; no side thread answers for the
loop. Writing shared memory wakes nobody, so beats cost the manager nothing.

The manager keeps one timer for all its workers, due at the earliest ``last
beat + hang_timeout + beat interval``. When it fires it reads each worker's
beat; one whose latest beat is older than that has had its loop blocked for
longer than the timeout (the extra interval keeps a block just shorter than the
timeout from counting), and is hung. Workers that beat keep moving the deadline,
so an idle manager wakes about once per hang timeout, however many workers it
has. Watching starts at the ack, so a slow boot is governed by the ack deadline
alone, and stops when the worker is asked to stop (a draining worker has the
stop's own deadline). A hung worker is asked to stop, killed after
``HANG_KILL_GRACE`` if it does not, and its slot is refilled at once (the
manager ended it, so it does not count towards the crash-loop limit).

Recycling. A worker counts its own requests (HTTP requests for an ASGI app,
connections for a protocol factory) and, once it reaches ``max_requests`` plus a
random jitter, its lifetime limit plus jitter, or its memory limit (resident
set size, read from ``/proc/self/statm`` at each check), sends ``Recycle`` once.
The manager answers with a zero-downtime restart of that slot, so the
replacement is serving before the old worker drains and no request fails. The
jitter keeps workers that started together from recycling together.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import resource
import time
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import TYPE_CHECKING, Any

from .config import RunOptions
from .messages import Recycle

if TYPE_CHECKING:
    from .children import Child

log = logging.getLogger("runtime")

MAX_BEAT = 5.0  # seconds between beats at most
MEMORY_CHECK = 2.0  # seconds between memory checks when no beats are due
HANG_KILL_GRACE = 3.0  # seconds a hung worker gets to stop before SIGKILL
MIB = 1024 * 1024


def beat_interval(hang_timeout: float) -> float:
    return min(hang_timeout / 4, MAX_BEAT)


def resident_bytes() -> int:
    """This process's resident set size now (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class WorkerHealth:
    """The worker's side: beats, request counting and recycling limits."""

    def __init__(
        self, options: RunOptions, send: Callable[[object], None], beat: Any = None
    ) -> None:
        self.options = options
        self.send = send
        self.beat = beat  # the shared double; None: no hang timeout, no beats
        self.requests = 0
        self.request_limit = 0
        if options.max_requests:
            jitter = random.randint(0, options.max_requests_jitter)
            self.request_limit = options.max_requests + jitter
        self.memory_limit = options.max_worker_memory * MIB
        self._recycling = False
        self._tick_timer: asyncio.TimerHandle | None = None
        self._lifetime_timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Begin beating and checking limits; call on the loop, once serving."""
        options = self.options
        if options.max_worker_memory and self._over_memory():
            log.warning(
                "This worker uses %.0f MiB as it starts, more than the max worker "
                "memory (%d MiB): not recycling it for memory; raise the limit",
                resident_bytes() / MIB,
                options.max_worker_memory,
            )
            self.memory_limit = 0
        if self.beat is not None or self.memory_limit:
            self._tick()
        if options.max_lifetime:
            lifetime = options.max_lifetime + random.uniform(
                0, options.max_lifetime_jitter
            )
            self._lifetime_timer = asyncio.get_running_loop().call_later(
                lifetime,
                self._recycle,
                f"it ran for {lifetime:.0f} s (max lifetime "
                f"{options.max_lifetime:g} s, plus jitter)",
            )

    def _over_memory(self) -> bool:
        return resident_bytes() > self.memory_limit

    def stop(self) -> None:
        for timer in (self._tick_timer, self._lifetime_timer):
            if timer is not None:
                timer.cancel()

    def on_request(self) -> None:
        """Count one request; ask for a replacement at the limit."""
        self.requests += 1
        if self.requests == self.request_limit:
            self._recycle(
                f"it served {self.requests} requests (max requests "
                f"{self.options.max_requests}, plus jitter)"
            )

    def _tick(self) -> None:
        options = self.options
        if self.beat is not None:
            self.beat.value = time.monotonic()
        if self.memory_limit and not self._recycling and self._over_memory():
            self._recycle(
                f"it uses {resident_bytes() / MIB:.0f} MiB (max worker memory "
                f"{options.max_worker_memory} MiB)"
            )
        intervals = [MEMORY_CHECK] if self.memory_limit else []
        if self.beat is not None:
            intervals.append(beat_interval(options.hang_timeout))
        loop = asyncio.get_running_loop()
        self._tick_timer = loop.call_later(min(intervals), self._tick)

    def _recycle(self, reason: str) -> None:
        if self._recycling:
            return
        self._recycling = True
        log.info("Asking for a replacement: %s", reason)
        try:
            self.send(Recycle(reason))
        except OSError:
            pass  # the manager is gone; the worker stops by itself


class HangWatch:
    """The manager's side: one timer that notices workers whose beats stopped."""

    def __init__(self, timeout: float, on_hung: Callable[[Child, float], None]) -> None:
        self.timeout = timeout
        # A loop blocked for ``timeout`` is silent for up to one beat interval
        # longer (the beat before the block came that much earlier), so only a
        # silence past ``limit`` proves a block longer than the timeout.
        self.limit = timeout + beat_interval(timeout) if timeout else 0.0
        self.on_hung = on_hung
        self._watched: set[Child] = set()
        self._timer: asyncio.TimerHandle | None = None

    def new_cell(self, context: BaseContext) -> Any:
        """A shared double for one worker's beats; None if nothing watches."""
        return context.RawValue("d", 0.0) if self.timeout else None

    def watch(self, child: Child) -> None:
        """Start watching ``child``; call when it acked."""
        if child.beat is None:  # no hang timeout: nothing to watch
            return
        child.last_beat = time.monotonic()
        self._watched.add(child)
        self._arm()

    def forget(self, child: Child) -> None:
        self._watched.discard(child)
        if not self._watched and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._watched:
            due = min(c.last_beat for c in self._watched) + self.limit
            loop = asyncio.get_running_loop()
            # loop.time() is time.monotonic() on the default and uvloop loops.
            self._timer = loop.call_at(
                due - time.monotonic() + loop.time(), self._check
            )

    def _check(self) -> None:
        self._timer = None
        now = time.monotonic()
        for child in list(self._watched):
            child.last_beat = max(child.last_beat, child.beat.value)
            silent = now - child.last_beat
            if child.stopping or not child.alive:
                self._watched.discard(child)
            elif silent >= self.limit:
                self._watched.discard(child)
                self.on_hung(child, silent)
        self._arm()

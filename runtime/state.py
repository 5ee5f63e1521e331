"""The state table: one entry per managed process, kept by the manager.

Life of an entry::

    NONE ──► IDLE ──► STARTING ──► STARTED ──► ACKED ──► JOINED      (stopped)
                                      │           │  └──► TERMINATED  (killed)
                                      └───────────┴─────► FAILED      (died)
                                                         COMPLETED   (exit 0 by
                                                                      itself)

NONE: the entry exists, no process yet. IDLE: the Process object exists but has not
been started. STARTING: ``start()`` is running. STARTED: the OS process runs.
ACKED: a server process is serving. RESTARTING: it is being replaced.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

import attrs


class State(enum.Enum):
    NONE = enum.auto()
    IDLE = enum.auto()
    STARTING = enum.auto()
    STARTED = enum.auto()
    ACKED = enum.auto()
    JOINED = enum.auto()
    TERMINATED = enum.auto()
    RESTARTING = enum.auto()
    FAILED = enum.auto()
    COMPLETED = enum.auto()


ALIVE = frozenset({State.STARTING, State.STARTED, State.ACKED, State.RESTARTING})


def now() -> datetime:
    return datetime.now(UTC)


@attrs.define
class ProcessEntry:
    """What the manager knows of one managed process."""

    server: bool
    state: State = State.NONE
    pid: int | None = None
    start_at: datetime | None = None
    starts: int = 0
    restart_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["state"] = self.state.name
        return out

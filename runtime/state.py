"""The state table: one entry per managed process, kept by the manager.

Life of an entry::

    NONE ──► IDLE ──► STARTING ──► STARTED ──► ACKED ──► JOINED      (stopped)
                                      │           │  └──► TERMINATED  (killed)
                                      └───────────┴─────► FAILED      (died)
                                                         COMPLETED   (exit 0 by
                                                                      itself)

NONE: the entry exists, no process yet. IDLE: the Process object exists but has not
been started. STARTING: ``start()`` is running. STARTED: the OS process runs.
ACKED: a server process is serving. RESTARTING: it is being replaced. An ended
process's entry also says how it ended (``exit_code`` or ``exit_signal``).
"""

from __future__ import annotations

import enum
import signal
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


SYSTEM_KEYS = frozenset(
    {
        "server",
        "state",
        "pid",
        "start_at",
        "starts",
        "restart_at",
        "exit_code",
        "exit_signal",
    }
)


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
    # Once the process ended: its exit code, or the name of the signal that
    # ended it (then exit_code is None).
    exit_code: int | None = None
    exit_signal: str | None = None
    user: dict[str, Any] = attrs.field(factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The entry as users see it: system keys, then their own keys."""
        out = attrs.asdict(self, filter=_system)
        out["state"] = self.state.name
        out.update((k, v) for k, v in self.user.items() if k not in SYSTEM_KEYS)
        return out


def _system(attribute: attrs.Attribute, value: Any) -> bool:
    return attribute.name in SYSTEM_KEYS


def record_exit(entry: ProcessEntry, code: int | None) -> None:
    """Note how the process ended: a negative code is the signal's number."""
    if code is not None and code < 0:
        try:
            entry.exit_signal = signal.Signals(-code).name
        except ValueError:
            entry.exit_signal = f"signal {-code}"
    else:
        entry.exit_code = code

"""The wire format between the manager and its children.

Each side holds one end of a ``multiprocessing.Pipe``. A message is one of the
small frozen classes below, sent with ``Connection.send`` (pickled, length-prefixed
by ``multiprocessing.connection``). Messages stay far below the pipe buffer size,
so a readable end always holds whole messages. Nothing else crosses the pipe.

Child to manager:
    ``Ack`` once serving; ``Failed`` when start-up raised; ``Stopping`` when a
    stop signal reached it directly; ``StateSeen`` after
    each ``StateTable``; ``RestartRequest``, ``ScaleRequest``,
    ``TerminateRequest`` and ``StateUpdate`` from the multiplexer (``rt.m``).
Manager to child:
    ``Stop`` to drain and exit; ``StateTable`` whenever any process's state
    changed; ``Rejected`` when a multiplexer request could not be carried out.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Ack:
    """The worker is serving: listening, and its after_server_start listeners ran."""

    pid: int


@attrs.frozen
class Failed:
    """Start-up failed in the worker; ``traceback`` is shown once by the manager."""

    pid: int
    error: str
    traceback: str


@attrs.frozen
class Stop:
    """Drain and exit."""


@attrs.frozen
class Stopping:
    """The worker received a stop signal itself and is draining."""

    signal: str


@attrs.frozen
class RestartRequest:
    """Restart the named processes, or every server worker."""

    names: tuple[str, ...]
    all_workers: bool
    zero_downtime: bool


@attrs.frozen
class ScaleRequest:
    """Run ``workers`` server workers from now on."""

    workers: int


@attrs.frozen
class TerminateRequest:
    """Stop the whole group."""


@attrs.frozen
class StateUpdate:
    """User keys for the sender's own state entry: set ``values``, drop ``removed``."""

    values: dict[str, Any]
    removed: tuple[str, ...] = ()


@attrs.frozen
class StateSeen:
    """The worker read the last StateTable; the manager may send the next one."""


@attrs.frozen
class StateTable:
    """Every process's state entry, keyed by process name."""

    entries: dict[str, dict[str, Any]]


@attrs.frozen
class Rejected:
    """A multiplexer request the manager refused, and why."""

    request: Any
    reason: str

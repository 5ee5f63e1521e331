"""The wire format between the manager and its children.

Each side holds one end of a ``multiprocessing.Pipe``. A message is one of the
small frozen classes below, sent with ``Connection.send`` (pickled, length-prefixed
by ``multiprocessing.connection``). Messages stay far below the pipe buffer size,
so a readable end always holds whole messages. Nothing else crosses the pipe.

Child to manager:
    ``Ack`` once serving; ``Failed`` when start-up raised; ``Stopping`` when a
    stop signal reached it directly; ``Recycle`` when a worker reached one of
    its limits; ``StateSeen`` after each ``StateTable``;
    requests (``RestartRequest``, ``ScaleRequest``, ``TerminateRequest``,
    ``ManageRequest``) and ``StateUpdate`` from the multiplexer (``rt.m``);
    ``Reload`` from the reloader.
Manager to child:
    ``Stop`` to drain and exit; ``StateTable`` whenever any process's state
    changed; ``Reply`` to every request, with the reason if it was refused.
"""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class Ack:
    """The worker is serving: listening, and its after_server_start listeners ran."""

    pid: int
    own_logging: bool = False  # logging was set up by the program or a log config


@attrs.frozen
class Failed:
    """Start-up failed in the worker; ``traceback`` is shown once by the manager."""

    pid: int
    error: str
    traceback: str


@attrs.frozen
class Recycle:
    """The worker reached a limit (requests, lifetime, memory); replace it."""

    reason: str


@attrs.frozen
class Stop:
    """Drain and exit."""


@attrs.frozen
class Stopping:
    """The worker received a stop signal itself and is draining."""

    signal: str


@attrs.frozen
class Reload:
    """From the reloader: these source files changed; restart what is transient."""

    paths: tuple[str, ...]


@attrs.frozen
class RestartRequest:
    """Restart the named processes, or every server worker (and transient one)."""

    request_id: int
    names: tuple[str, ...]
    all_workers: bool
    zero_downtime: bool


@attrs.frozen
class ScaleRequest:
    """Run ``workers`` server workers from now on."""

    request_id: int
    workers: int


@attrs.frozen
class TerminateRequest:
    """Stop the whole group."""

    request_id: int


@attrs.frozen
class ManageRequest:
    """Start custom processes, as ``rt.manager.manage(name, func, kwargs, ...)``."""

    request_id: int
    name: str
    func: Any
    kwargs: dict[str, Any] | None
    options: dict[str, Any]


Request = RestartRequest | ScaleRequest | TerminateRequest | ManageRequest


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
class Reply:
    """The manager's answer to a request: ``error`` is None if it was accepted."""

    request_id: int
    error: str | None

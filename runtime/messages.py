"""The wire format between the manager and its children.

Each side holds one end of a ``multiprocessing.Pipe``. A message is one of the
small frozen classes below, sent with ``Connection.send`` (pickled, length-prefixed
by ``multiprocessing.connection``). Messages stay far below the pipe buffer size,
so a readable end always holds whole messages. Nothing else crosses the pipe.

Child to manager: ``Ack`` once serving, ``Failed`` when start-up raised.
Manager to child: ``Stop`` to drain and exit.
"""

from __future__ import annotations

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


Message = Ack | Failed | Stop

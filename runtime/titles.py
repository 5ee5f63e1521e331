"""Process titles: what ``ps`` and ``top`` show for each process of a run.

With the ``proctitle`` extra (setproctitle) installed, the manager shows as
``runtime: manager [NAME]``, a server worker as ``runtime: Runtime-Server-0-0``
and a custom process as ``runtime: <its process name>``; without it, titles stay
as they are.
"""

from __future__ import annotations

PREFIX = "runtime: "


def set_title(title: str) -> None:
    """Show ``runtime: <title>`` for this process, if setproctitle is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(PREFIX + title)

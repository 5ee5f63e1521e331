"""systemd: the service notify protocol and socket activation.

Design note
-----------
Notify (``Type=notify``): systemd names a unix datagram socket in
``NOTIFY_SOCKET``; the manager sends it newline-separated ``KEY=VALUE``
datagrams:

* ``READY=1`` once every server worker has acked, never before;
* ``RELOADING=1`` (with ``MONOTONIC_USEC``) when a rolling restart begins, and
  ``READY=1`` again once it is over;
* ``STATUS=`` whenever the number of ready workers changes;
* ``STOPPING=1`` when the group begins to stop;
* ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` while the manager's loop runs, so
  a manager whose loop is stuck is restarted by systemd.

The manager removes these variables from its environment, so that worker
processes (and whatever they run) do not speak for the service. Without
``NOTIFY_SOCKET`` every call does nothing. A datagram that cannot be sent is
logged once and dropped: systemd being away never stops the group.

Socket activation: systemd binds the sockets of a ``.socket`` unit and passes
them as file descriptors 3, 4, ... with ``LISTEN_FDS`` (how many) and
``LISTEN_PID`` (for which process). The runtime serves one listening socket,
so it takes exactly one.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

log = logging.getLogger("runtime")

LISTEN_FDS_START = 3  # the first fd systemd passes
MIN_PING = 0.05  # seconds: the shortest watchdog interval
_NOTIFY_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_LISTEN_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


class Notifier:
    """Sends service state to systemd; does nothing when not run by it."""

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        self.address = address
        # Seconds between pings, 0 for none; however short systemd's period,
        # the manager does not ping more than 20 times a second.
        self.watchdog_interval = (
            max(watchdog_usec / 2e6, MIN_PING) if watchdog_usec else 0
        )
        self._sock: socket.socket | None = None
        self._status: str | None = None
        self._failed = False
        self._watchdog: Any = None
        if address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._sock.setblocking(False)

    @classmethod
    def from_environment(cls) -> Notifier:
        """The notifier systemd asked for; takes its variables out of os.environ."""
        env = {name: os.environ.pop(name, None) for name in _NOTIFY_ENV}
        address = env["NOTIFY_SOCKET"]
        if address and address.startswith("@"):  # an abstract socket
            address = "\0" + address[1:]
        watchdog = 0
        if env["WATCHDOG_USEC"] and _for_us(env["WATCHDOG_PID"]):
            try:
                watchdog = max(int(env["WATCHDOG_USEC"]), 0)
            except ValueError:
                log.warning(
                    "Ignored WATCHDOG_USEC=%r: not a number", env["WATCHDOG_USEC"]
                )
        return cls(address or None, watchdog)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> None:
        if self._sock is None or self.address is None:
            return
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "Cannot notify systemd at %r (%s); carrying on without it",
                    self.address.replace("\0", "@"),
                    exc.strerror,
                )

    def ready(self, status: str) -> None:
        self._status = status
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=restarting workers")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def status(self, status: str) -> None:
        """Send ``status`` if it differs from the last one sent."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def start_watchdog(self, loop: Any) -> None:
        if self.active and self.watchdog_interval > 0:
            self._ping(loop)

    def _ping(self, loop: Any) -> None:
        self.send("WATCHDOG=1")
        self._watchdog = loop.call_later(self.watchdog_interval, self._ping, loop)

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _for_us(pid: str | None) -> bool:
    return not pid or pid == str(os.getpid())


def listen_fds() -> list[int]:
    """The listening sockets systemd passed to this process (none if not)."""
    count = os.environ.get("LISTEN_FDS")
    if not count or os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []  # none, or they were passed to another process
    try:
        return list(range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)))
    except ValueError:
        return []


def forget_listen_fds() -> None:
    """Take the socket-activation variables out of the environment (once used)."""
    for name in _LISTEN_ENV:
        os.environ.pop(name, None)

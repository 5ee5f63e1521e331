"""The listening socket: bound once in the main process, inherited by every worker.

Because the main process keeps its copy open for the whole run, a connection that
arrives while no worker is accepting waits in the kernel's backlog instead of being
refused.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat

from . import systemd
from .config import RunOptions
from .errors import AddressError, BindError

log = logging.getLogger("runtime")


def listen(options: RunOptions) -> socket.socket:
    """Return a listening socket for ``options`` (TCP, unix path or inherited fd)."""
    if options.fd is not None:
        sock = _from_fd(options.fd, options.backlog)
        systemd.forget_listen_fds()  # used: not for the workers to see
        return sock
    if options.uds is not None:
        return _unix(options.uds, options.backlog)
    return tcp(options.host, options.port, options.backlog)


def describe(sock: socket.socket) -> str:
    """A URL-like name for logs: http://127.0.0.1:8000, http://[::1]:80, unix:/p."""
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return f"unix:{address}"
    host, port = address[0], address[1]
    if sock.family == socket.AF_INET6:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def close(sock: socket.socket, options: RunOptions) -> None:
    """Close the socket; remove the unix path the runtime created."""
    sock.close()
    if options.uds is not None and options.fd is None:
        try:
            if stat.S_ISSOCK(os.stat(options.uds).st_mode):
                os.unlink(options.uds)
        except FileNotFoundError:
            pass
        except OSError as exc:  # its directory is not the user's we switched to
            log.warning("Could not remove %s (%s)", options.uds, exc.strerror)


def tcp(
    host: str, port: int, backlog: int, *, inheritable: bool = True
) -> socket.socket:
    # Resolved with the blocking resolver on purpose: an event loop's resolver
    # would leave helper threads behind, and forking after that is unsafe.
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise AddressError(
            f"cannot resolve host {host!r} ({exc.strerror}); pass an IP address "
            f"or a host name this machine knows"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(f"{host}:{port}", exc) from None
    sock.set_inheritable(inheritable)
    return sock


def _unix(path: str, backlog: int) -> socket.socket:
    path = os.fspath(path)
    if os.path.exists(path):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise AddressError(
                f"unix socket path {path!r} exists and is not a socket; choose "
                f"another path"
            )
        if _unix_in_use(path):
            raise BindError(
                f"unix socket {path!r} is in use by another server; stop it or "
                f"choose another path"
            )
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise _bind_error(path, exc) from None
    return sock


def _unix_in_use(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _from_fd(fd: int, backlog: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise AddressError(
            f"fd {fd} is not an open socket ({exc.strerror}); pass the number of "
            f"a bound socket this process inherited"
        ) from None
    problem = _fd_problem(sock)
    if problem:
        sock.detach()
        raise AddressError(f"fd {fd} {problem}; pass a bound TCP or unix socket")
    sock.listen(backlog)
    return sock


def _fd_problem(sock: socket.socket) -> str | None:
    if sock.type != socket.SOCK_STREAM:
        return "is not a stream socket"
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return None if address else "is not bound to a path"
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        return None if address[1] else "is not bound to a port"
    return f"has an unsupported address family ({sock.family.name})"


def _bind_error(where: str, exc: OSError) -> BindError | AddressError:
    if exc.errno == errno.EADDRINUSE:
        hint = "stop the other server or choose another port or path"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        hint = "use a port above 1023, a writable path, or the needed privileges"
    elif exc.errno == errno.EADDRNOTAVAIL:
        return AddressError(
            f"cannot listen on {where}: {exc.strerror}; use an address of this "
            f"machine, such as 127.0.0.1 or ::1"
        )
    elif exc.errno == errno.ENOENT:
        return AddressError(
            f"cannot listen on {where}: its directory does not exist; create it "
            f"or choose another path"
        )
    else:
        hint = "check the address"
    return BindError(f"cannot listen on {where}: {exc.strerror}; {hint}")

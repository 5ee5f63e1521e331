"""Switching the manager to an unprivileged user and group.

The manager binds what may need root (the listening socket, a port below 1024,
the inspector's and the health port's sockets, the TLS key, the pid file), then
switches: supplementary groups first (``initgroups`` from the user database, or
just the one group), then the group, then the user, for real, effective and
saved ids alike, so it cannot switch back. Everything after that runs as that
user: the main-process listeners, the fork server, the workers, custom
processes and the reloader. A unix socket path is handed to that user too.

Names are looked up when the run is configured, before anything binds; a name
that the user database does not know is a ConfigError. A numeric id need not be
in the database, but a uid that is not needs ``group`` too (its group is
unknown otherwise).
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
import sys

import attrs

from .errors import ConfigError, PrivilegeError

log = logging.getLogger("runtime")


@attrs.frozen
class Identity:
    """Who to become: ``uid`` None keeps the user and changes only the group."""

    uid: int | None
    gid: int
    user: str | None  # the user database's name, for initgroups
    label: str

    def __str__(self) -> str:
        return self.label


MAX_ID = 2**32 - 2  # (uid_t)-1 means "unchanged" to the kernel


def check(value: object, what: str) -> str | int | None:
    """``value`` as a user or group setting: None, a name, or an id 0..MAX_ID."""
    if isinstance(value, str) and value.isdigit():
        number = int(value)
    elif value is None or (isinstance(value, str) and value):
        return value
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        number = -1
    if 0 <= number <= MAX_ID:
        return value  # type: ignore[return-value]
    raise ConfigError(
        f"{what} must be a name or a numeric id from 0 to {MAX_ID}, got {value!r}"
    )


def resolve(user: str | int | None, group: str | int | None) -> Identity | None:
    """The identity ``user`` and ``group`` name; ConfigError if one is unknown."""
    if user is None and group is None:
        return None
    uid = gid = name = None
    parts = []
    if user is not None:
        entry = _user_entry(user)
        uid = entry.pw_uid if entry else int(user)
        name = entry.pw_name if entry else None
        gid = entry.pw_gid if entry else None
        parts.append(f"user {name!r} (uid {uid})" if name else f"uid {uid}")
    if group is not None:
        gid, group_name = _group_id(group)
    elif gid is None:
        raise ConfigError(
            f"user {user!r}: uid {uid} is not in the user database, so its group "
            f"is unknown; pass a group too (--group, GROUP)"
        )
    else:
        group_name = _group_name(gid)
    parts.append(f"group {group_name!r} (gid {gid})" if group_name else f"gid {gid}")
    return Identity(uid, gid, name, ", ".join(parts))


def _user_entry(user: str | int) -> pwd.struct_passwd | None:
    if isinstance(user, str):
        try:
            return pwd.getpwnam(user)
        except KeyError:
            if not user.isdigit():
                raise ConfigError(
                    f"user {user!r} is unknown on this machine; give a name from "
                    f"the user database (/etc/passwd) or a numeric uid"
                ) from None
    try:
        return pwd.getpwuid(int(user))
    except (KeyError, OverflowError):
        return None


def _group_id(group: str | int) -> tuple[int, str | None]:
    if isinstance(group, str):
        try:
            return grp.getgrnam(group).gr_gid, group
        except KeyError:
            if not group.isdigit():
                raise ConfigError(
                    f"group {group!r} is unknown on this machine; give a name from "
                    f"the group database (/etc/group) or a numeric gid"
                ) from None
    return int(group), _group_name(int(group))


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return None


def drop(
    identity: Identity | None, uds: str | None = None, *, fresh: bool = False
) -> None:
    """Become ``identity``; PrivilegeError if this process may not. The unix
    socket at ``uds``, if any, is given to that user and group first.

    ``fresh``: processes will start afresh in the working directory (spawn and
    forkserver), so that user must be able to enter it; a PrivilegeError says so
    now rather than a traceback per worker. Otherwise it is a warning.
    """
    if identity is None:
        return
    _switch(identity, uds)
    cwd = os.getcwd()
    if not os.access(cwd, os.R_OK | os.X_OK):
        problem = (
            f"switched to {identity}, which cannot enter the working directory {cwd!r}"
        )
        if fresh:
            raise PrivilegeError(
                f"{problem}, where new worker processes start; start the runtime "
                f"from a directory that user can enter"
            )
        log.warning("%s; files relative to it cannot be opened", problem)


def _switch(identity: Identity, uds: str | None) -> None:
    if uds is not None and os.getuid() == 0:
        uid = -1 if identity.uid is None else identity.uid
        os.chown(uds, uid, identity.gid)
    if _already(identity):
        log.info("Running as %s", identity)
        return
    try:
        if identity.user is not None:
            os.initgroups(identity.user, identity.gid)
        else:
            os.setgroups([identity.gid])
        os.setgid(identity.gid)
        if identity.uid is not None:
            os.setuid(identity.uid)
    except PermissionError as exc:
        raise PrivilegeError(
            f"cannot switch to {identity}: {exc.strerror} (this process runs as "
            f"uid {os.getuid()}); start it as root (with CAP_SETUID and "
            f"CAP_SETGID), or drop --user and --group"
        ) from None
    log.info("Running as %s", identity)
    _check_runnable(identity)


def _check_runnable(identity: Identity) -> None:
    """New processes run this interpreter and import the runtime: as that user."""
    import runtime

    stdlib = os.path.dirname(os.__file__)
    for path in (sys.executable, stdlib, os.path.dirname(runtime.__file__)):
        if not os.access(path, os.R_OK | os.X_OK):
            raise PrivilegeError(
                f"switched to {identity}, which cannot run {path!r}; install "
                f"Python and the app where that user can read them (for example "
                f"a virtual environment outside /root)"
            )


def _already(identity: Identity) -> bool:
    uid_ok = identity.uid is None or os.getresuid() == (identity.uid,) * 3
    return uid_ok and os.getresgid() == (identity.gid,) * 3 and os.getuid() != 0

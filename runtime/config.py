"""Settings: ``rt.config`` (kept on the runtime) and ``RunOptions`` (one run's view).

``Config`` holds upper-case keys a user may set at any time before ``run()``;
every assignment is validated at once. ``RunOptions`` is the frozen, picklable
result of merging the config with ``run()`` arguments; it is what worker processes
receive.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
from typing import Any

import attrs

from . import logs, privileges, systemd
from .errors import ConfigError

LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")

log = logging.getLogger("runtime")


def _positive_number(name: str, value: object, fix: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}; {fix}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be above 0 seconds, got {value!r}; {fix}")
    return float(value)


MIN_LIMIT = 1.0  # seconds: the shortest hang timeout or worker lifetime
LIMITS = ("hang_timeout", "max_lifetime")  # 0 (off) or at least MIN_LIMIT


def _seconds_or_off(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"{name} must be 0 (off) or a positive number of seconds, got {value!r}"
        )
    if name.lower() in LIMITS and 0 < value < MIN_LIMIT:
        raise ConfigError(
            f"{name} must be 0 (off) or at least {MIN_LIMIT:g} s, got {value!r}"
        )
    return float(value)


def _int_in(name: str, value: object, low: int, high: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}; {fix}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be {low}..{high}, got {value!r}; {fix}")
    return value


def log_level(value: object) -> str:
    if isinstance(value, str) and value.upper() in LOG_LEVELS:
        return value.upper()
    raise ConfigError(
        f"log level {value!r} is unknown; use one of {', '.join(LOG_LEVELS)}"
    )


def _log_format(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    log_format(value)


def log_format(value: object) -> str:
    if value not in logs.FORMATS:
        raise ConfigError(
            f"log format {value!r} is unknown; use one of {', '.join(logs.FORMATS)}"
        )
    return value  # type: ignore[return-value]


def _log_config(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and not isinstance(value, str | dict):
        raise ConfigError(
            f"{attribute.name} must be a file path or a dictConfig dict, got {value!r}"
        )


def _seconds_or_none(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if value is not None:
        _positive_number(attribute.name, value, "use a value such as 30")


def _seconds(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    _positive_number(attribute.name, value, "use a value such as 15")


def _flag(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{attribute.name} must be True or False, got {value!r}")


def _level(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    log_level(value)


def _backlog(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    _int_in(attribute.name, value, 1, 65535, "use a value such as 2048")


def _port(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    _int_in(attribute.name, value, 0, 65535, "use a TCP port such as 6457")


def _host(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{attribute.name} must be a host name, got {value!r}")


def _host_or_none(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if value is not None:
        _host(inst, attribute, value)


def _port_or_none(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if value is not None:
        _int_in(attribute.name, value, 0, 65535, "use a TCP port such as 6458")


def api_key_problem(value: object) -> str | None:
    """Why ``value`` cannot be an inspector API key, or None if it can."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value) < 8:
        return "must be a string of 8 characters or more (or None)"
    if not all("!" <= c <= "~" for c in value):
        return "must be printable ASCII without spaces (it travels in a header)"
    return None


def _key(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if problem := api_key_problem(value):
        raise ConfigError(f"{attribute.name} {problem}")


def _path(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{attribute.name} must be a file path, got {value!r}")


def _identity(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    privileges.check(value, attribute.name)


def _dirs(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    reload_dirs(value, attribute.name)


def _patterns(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    patterns(value, attribute.name)


def _files(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{attribute.name} must be a tuple of paths, got {value!r}")


def reload_dirs(value: object, name: str = "reload_dirs") -> tuple[str, ...]:
    """``value`` as a tuple of existing directories; ConfigError otherwise."""
    items = _strings(value, name, "directories")
    for item in items:
        if not os.path.isdir(item):
            raise ConfigError(
                f"reload directory {item!r} does not exist or is not a directory; "
                f"pass an existing directory"
            )
    return tuple(os.path.abspath(item) for item in items)


def patterns(value: object, name: str) -> tuple[str, ...]:
    """``value`` as a tuple of glob patterns such as ``*.py``; ConfigError otherwise."""
    return _strings(value, name, "glob patterns such as '*.html'")


def _strings(value: object, name: str, what: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{name} must be a list of {what}, got {value!r}")
    if not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{name} must be a list of {what}, got {value!r}")
    return tuple(value)


def _off_or_seconds(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    _seconds_or_off(attribute.name, value)


def _off_or_count(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    _int_in(attribute.name, value, 0, 2**62, "0 turns it off")


def _crash_limit(inst: Any, attribute: attrs.Attribute, value: object) -> None:
    _int_in(attribute.name, value, 1, 1000, "use a value such as 5")


@attrs.define(on_setattr=attrs.setters.validate)
class Config:
    """Settings of one Runtime; ``run()`` arguments override them for that run."""

    ACK_TIMEOUT: float | None = attrs.field(default=None, validator=_seconds_or_none)
    GRACEFUL_TIMEOUT: float = attrs.field(default=15.0, validator=_seconds)
    KEEP_ALIVE_TIMEOUT: float = attrs.field(default=5.0, validator=_seconds)
    ACCESS_LOG: bool = attrs.field(default=False, validator=_flag)
    LOG_LEVEL: str = attrs.field(default="INFO", validator=_level)
    LOG_FORMAT: str = attrs.field(default="text", validator=_log_format)
    LOG_FILE: str | None = attrs.field(default=None, validator=_path)
    LOG_CONFIG: str | dict[str, Any] | None = attrs.field(
        default=None, validator=_log_config
    )
    BACKLOG: int = attrs.field(default=2048, validator=_backlog)
    CRASH_LOOP_LIMIT: int = attrs.field(default=5, validator=_crash_limit)
    INSPECTOR: bool = attrs.field(default=False, validator=_flag)
    INSPECTOR_HOST: str = attrs.field(default="localhost", validator=_host)
    INSPECTOR_PORT: int = attrs.field(default=6457, validator=_port)
    INSPECTOR_API_KEY: str | None = attrs.field(
        default=None, validator=_key, repr=False
    )
    INSPECTOR_TLS_CERT: str | None = attrs.field(default=None, validator=_path)
    INSPECTOR_TLS_KEY: str | None = attrs.field(default=None, validator=_path)
    HEALTH_WITHOUT_KEY: bool = attrs.field(default=False, validator=_flag)
    HEALTH_PORT: int | None = attrs.field(default=None, validator=_port_or_none)
    HEALTH_HOST: str | None = attrs.field(default=None, validator=_host_or_none)
    PID_FILE: str | None = attrs.field(default=None, validator=_path)
    USER: str | int | None = attrs.field(default=None, validator=_identity)
    GROUP: str | int | None = attrs.field(default=None, validator=_identity)
    HANG_TIMEOUT: float = attrs.field(default=30.0, validator=_off_or_seconds)
    MAX_REQUESTS: int = attrs.field(default=0, validator=_off_or_count)
    MAX_REQUESTS_JITTER: int = attrs.field(default=0, validator=_off_or_count)
    MAX_LIFETIME: float = attrs.field(default=0.0, validator=_off_or_seconds)
    MAX_LIFETIME_JITTER: float = attrs.field(default=0.0, validator=_off_or_seconds)
    MAX_WORKER_MEMORY: int = attrs.field(default=0, validator=_off_or_count)
    AUTO_RELOAD: bool = attrs.field(default=False, validator=_flag)
    RELOAD_DIRS: tuple[str, ...] = attrs.field(default=(), validator=_dirs)
    RELOAD_INCLUDE: tuple[str, ...] = attrs.field(default=(), validator=_patterns)
    RELOAD_EXCLUDE: tuple[str, ...] = attrs.field(default=(), validator=_patterns)
    # Set by the runtime in a server worker started by a reload: the changed files.
    RELOADED_FILES: tuple[str, ...] = attrs.field(default=(), validator=_files)


@attrs.frozen
class RunOptions:
    """Everything one run needs, validated; safe to send to worker processes."""

    host: str = "127.0.0.1"
    port: int = 8000
    uds: str | None = None
    fd: int | None = None
    workers: int = 1
    single_process: bool = False
    ack_timeout: float = 30.0
    graceful_timeout: float = 15.0
    keep_alive_timeout: float = 5.0
    access_log: bool = False
    log_level: str = "INFO"
    log_format: str = "text"
    log_file: str | None = None
    log_config: logs.LogConfig | None = None  # read once, by the manager
    backlog: int = 2048
    crash_loop_limit: int = 5
    inspector: bool = False
    inspector_host: str = "localhost"
    inspector_port: int = 6457
    inspector_api_key: str | None = attrs.field(default=None, repr=False)
    inspector_tls_cert: str | None = None
    inspector_tls_key: str | None = None
    health_without_key: bool = False  # /healthz and /readyz need no inspector key
    health_port: int | None = None  # a port serving only /healthz and /readyz
    health_host: str = "localhost"  # where it listens; the inspector's host if unset
    pid_file: str | None = None  # the manager's pid, written once it listens
    user: str | int | None = None  # switched to once everything is bound
    group: str | int | None = None
    hang_timeout: float = 30.0  # 0: off
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_lifetime: float = 0.0
    max_lifetime_jitter: float = 0.0
    max_worker_memory: int = 0  # MiB
    auto_reload: bool = False
    reload_dirs: tuple[str, ...] = ()
    reload_include: tuple[str, ...] = ()  # besides *.py
    reload_exclude: tuple[str, ...] = ()

    @classmethod
    def build(cls, config: Config, threshold: int, **given: Any) -> RunOptions:
        """Merge ``run()`` arguments over ``config``; raise ConfigError if invalid."""
        unknown = set(given) - set(attrs.fields_dict(cls))
        if unknown:
            raise ConfigError(
                f"run() got unknown argument(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(attrs.fields_dict(cls))}"
            )
        given = {k: v for k, v in given.items() if v is not None}
        values: dict[str, Any] = {
            "ack_timeout": _ack_timeout(config, threshold),
            "graceful_timeout": config.GRACEFUL_TIMEOUT,
            "keep_alive_timeout": config.KEEP_ALIVE_TIMEOUT,
            "access_log": config.ACCESS_LOG,
            "log_level": config.LOG_LEVEL,
            "log_format": config.LOG_FORMAT,
            "log_file": config.LOG_FILE,
            "log_config": config.LOG_CONFIG,
            "backlog": config.BACKLOG,
            "crash_loop_limit": config.CRASH_LOOP_LIMIT,
            "inspector": config.INSPECTOR,
            "inspector_host": config.INSPECTOR_HOST,
            "inspector_port": config.INSPECTOR_PORT,
            "inspector_api_key": config.INSPECTOR_API_KEY,
            "inspector_tls_cert": config.INSPECTOR_TLS_CERT,
            "inspector_tls_key": config.INSPECTOR_TLS_KEY,
            "health_without_key": config.HEALTH_WITHOUT_KEY,
            "health_port": config.HEALTH_PORT,
            "health_host": config.HEALTH_HOST,
            "pid_file": config.PID_FILE,
            "user": config.USER,
            "group": config.GROUP,
            "hang_timeout": config.HANG_TIMEOUT,
            "max_requests": config.MAX_REQUESTS,
            "max_requests_jitter": config.MAX_REQUESTS_JITTER,
            "max_lifetime": config.MAX_LIFETIME,
            "max_lifetime_jitter": config.MAX_LIFETIME_JITTER,
            "max_worker_memory": config.MAX_WORKER_MEMORY,
            "auto_reload": config.AUTO_RELOAD,
            "reload_dirs": config.RELOAD_DIRS,
            "reload_include": config.RELOAD_INCLUDE,
            "reload_exclude": config.RELOAD_EXCLUDE,
        }
        values.update(given)
        activated = _activated_socket(given)
        if activated is not None:
            values["fd"] = activated
        if values["reload_dirs"] and "auto_reload" not in given:
            values["auto_reload"] = True  # naming directories to watch asks for it
        options = cls(**_validated(values))
        if options.single_process:
            _warn_of_what_needs_a_manager(options, given)
        return options

    @property
    def log_level_number(self) -> int:
        return logging.getLevelName(self.log_level)


def _activated_socket(given: dict[str, Any]) -> int | None:
    """The fd of the listening socket systemd passed (socket activation), if any."""
    fds = systemd.listen_fds()
    if not fds:
        return None
    places = [k for k in ("host", "port", "uds", "fd") if given.get(k) is not None]
    if places:
        raise ConfigError(
            f"systemd passed a listening socket (LISTEN_FDS), and {', '.join(places)} "
            f"was given too; drop {', '.join(places)} to serve the socket unit's"
        )
    if len(fds) > 1:
        raise ConfigError(
            f"systemd passed {len(fds)} listening sockets (LISTEN_FDS={len(fds)}), "
            f"and the runtime serves one; give the socket unit one ListenStream="
        )
    return fds[0]


def _ack_timeout(config: Config, threshold: object) -> float:
    if config.ACK_TIMEOUT is not None:
        return config.ACK_TIMEOUT
    tenths = _int_in(
        "ProcessGroup.THRESHOLD",
        threshold,
        1,
        10**7,
        "it counts tenths of a second, e.g. 600 for one minute",
    )
    return tenths / 10


def _validated(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    if "workers" in out:
        out["workers"] = _int_in(
            "workers", out["workers"], 1, 1024, "use 1 to 1024 worker processes"
        )
    if "port" in out:
        out["port"] = _int_in("port", out["port"], 0, 65535, "use a TCP port")
    if "host" in out and (not isinstance(out["host"], str) or not out["host"]):
        raise ConfigError(f"host must be a host name or address, got {out['host']!r}")
    if "fd" in out:
        out["fd"] = _int_in("fd", out["fd"], 0, 2**31 - 1, "pass an open socket fd")
    places = [k for k in ("uds", "fd") if out.get(k) is not None]
    if out.get("host") is not None or out.get("port") is not None:
        places.insert(0, "host/port")
    if len(places) > 1:
        raise ConfigError(f"got {' and '.join(places)}; listen on only one of them")
    if out.get("single_process") and out.get("workers", 1) > 1:
        raise ConfigError(
            f"single_process serves from one process, but workers="
            f"{out['workers']} was given; drop one of them"
        )
    for name in ("ack_timeout", "graceful_timeout", "keep_alive_timeout"):
        out[name] = _positive_number(name, out[name], "use a value such as 15")
    _validate_logging(out)
    if problem := api_key_problem(out.get("inspector_api_key")):
        raise ConfigError(f"the inspector API key {problem}")
    if bool(out.get("inspector_tls_cert")) != bool(out.get("inspector_tls_key")):
        raise ConfigError(
            "the inspector's TLS needs both a certificate and its key; pass both"
        )
    for name in ("inspector_tls_cert", "inspector_tls_key"):
        path = out.get(name)
        if out.get("inspector") and path and not os.path.isfile(path):
            raise ConfigError(f"{name} {path!r} is not a file; give an existing PEM")
    if out.get("inspector") and out.get("inspector_tls_cert"):
        _check_tls(out["inspector_tls_cert"], out["inspector_tls_key"])
    if out.get("inspector") and out.get("single_process"):
        raise ConfigError(
            "the inspector runs in the manager, which single_process has none of; "
            "drop one of them"
        )
    out["inspector_port"] = _int_in(
        "inspector_port", out["inspector_port"], 0, 65535, "e.g. 6457"
    )
    _validate_reload(out)
    _validate_health(out)
    _validate_health_checks(out)
    out["pid_file"] = _pid_file(out.get("pid_file"))
    _validate_identity(out)
    for name in ("single_process", "access_log", "inspector"):
        if name in out and not isinstance(out[name], bool):
            raise ConfigError(f"{name} must be True or False, got {out[name]!r}")
    out["backlog"] = _int_in("backlog", out["backlog"], 1, 65535, "e.g. 2048")
    out["crash_loop_limit"] = _int_in(
        "crash_loop_limit", out["crash_loop_limit"], 1, 1000, "e.g. 5"
    )
    return out


def _validate_logging(out: dict[str, Any]) -> None:
    out["log_level"] = log_level(out["log_level"])
    out["log_format"] = log_format(out["log_format"])
    if out["log_file"] is not None and (
        not isinstance(out["log_file"], str) or not out["log_file"]
    ):
        raise ConfigError(f"log_file must be a file path, got {out['log_file']!r}")
    out["log_config"] = logs.load_config(out["log_config"])
    if out["log_config"] is not None:
        if out["log_file"] or out["log_format"] != "text":
            raise ConfigError(
                "log_config sets up handlers and formats itself, so log_file and "
                "log_format have no place beside it; drop them, or the log config"
            )


def _check_tls(cert: str, key: str) -> None:
    """Load the pair once now, so a bad file is named before anything binds."""
    import ssl

    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"the inspector's TLS certificate {cert!r} and key {key!r} do not load "
            f"({exc}); give a PEM certificate and its private key"
        ) from None


def _warn_of_what_needs_a_manager(options: RunOptions, given: dict[str, Any]) -> None:
    """Single-process mode: the limits a manager would enforce do nothing."""
    limits = [
        n
        for n in ("max_requests", "max_lifetime", "max_worker_memory")
        if getattr(options, n)
    ]
    if limits:
        log.warning(
            "%s: no effect in single-process mode, where no manager replaces the "
            "process; ignored",
            " and ".join(limits),
        )
    if given.get("hang_timeout") is not None:  # its default is on: only if asked
        log.warning(
            "hang_timeout: no effect in single-process mode, where no manager "
            "watches the process; ignored"
        )


def _validate_health(out: dict[str, Any]) -> None:
    for name in ("hang_timeout", "max_lifetime", "max_lifetime_jitter"):
        out[name] = _seconds_or_off(name, out[name])
    for name in ("max_requests", "max_requests_jitter", "max_worker_memory"):
        out[name] = _int_in(name, out[name], 0, 2**62, "0 turns it off")
    for jitter, limit in (
        ("max_requests_jitter", "max_requests"),
        ("max_lifetime_jitter", "max_lifetime"),
    ):
        if out[jitter] and not out[limit]:
            log.warning("%s has no effect without %s; it is ignored", jitter, limit)


def _validate_health_checks(out: dict[str, Any]) -> None:
    """/healthz and /readyz: on the inspector, and on a port of their own."""
    port, host = out.get("health_port"), out.get("health_host")
    if port is not None:
        port = _int_in("health_port", port, 0, 65535, "use a TCP port such as 6458")
    if host is not None and (not isinstance(host, str) or not host):
        raise ConfigError(f"health_host must be a host name or address, got {host!r}")
    if port is not None and out.get("single_process"):
        raise ConfigError(
            "the health port is served by the manager, which single_process has "
            "none of; drop one of them"
        )
    if host is not None and port is None:
        log.warning("health_host has no effect without health_port; it is ignored")
    out["health_port"] = port
    out["health_host"] = host or out.get("inspector_host") or "localhost"
    without_key = out.get("health_without_key", False)
    if not isinstance(without_key, bool):
        raise ConfigError(
            f"health_without_key must be True or False, got {without_key!r}"
        )
    if without_key and not out.get("inspector"):
        log.warning(
            "health_without_key has no effect without the inspector (--inspect); "
            "it is ignored"
        )
    elif without_key and not out.get("inspector_api_key"):
        log.warning(
            "health_without_key has no effect without an inspector API key: no "
            "route needs one; it is ignored"
        )
    unused = [
        name
        for name in ("inspector_api_key", "inspector_tls_cert", "inspector_tls_key")
        if out.get(name) and not out.get("inspector")
    ]
    if unused:
        log.warning(
            "%s: no effect without the inspector (--inspect); ignored",
            " and ".join(unused),
        )


def _validate_identity(out: dict[str, Any]) -> None:
    """The user and group to switch to: known here, now, before binding."""
    for name in ("user", "group"):
        out[name] = privileges.check(out.get(name), name)
    privileges.resolve(out["user"], out["group"])


def _pid_file(path: object) -> str | None:
    """An absolute path whose directory exists, or None."""
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ConfigError(f"pid_file must be a file path, got {path!r}")
    path = os.path.abspath(path)
    if os.path.isdir(path):
        raise ConfigError(f"pid_file {path!r} is a directory; name a file in it")
    if not os.path.isdir(os.path.dirname(path)):
        raise ConfigError(
            f"pid_file {path!r}: its directory does not exist; create it or "
            f"choose another path"
        )
    return path


def _validate_reload(out: dict[str, Any]) -> None:
    out["reload_dirs"] = reload_dirs(out["reload_dirs"])
    out["reload_include"] = patterns(out["reload_include"], "reload_include")
    out["reload_exclude"] = patterns(out["reload_exclude"], "reload_exclude")
    if not isinstance(out["auto_reload"], bool):
        raise ConfigError(
            f"auto_reload must be True or False, got {out['auto_reload']!r}"
        )
    if out["auto_reload"] and out.get("single_process"):
        raise ConfigError(
            "auto_reload restarts worker processes, which single_process has none "
            "of; drop one of them"
        )
    if not out["auto_reload"] and (out["reload_include"] or out["reload_exclude"]):
        log.warning(
            "reload_include and reload_exclude have no effect without auto_reload "
            "(--reload); they are ignored"
        )
    if not out["auto_reload"] and out["reload_dirs"]:
        log.warning("reload_dirs has no effect with auto_reload turned off; ignored")
    if out["auto_reload"] and any(
        fnmatch.fnmatch("x.py", p) for p in out["reload_exclude"]
    ):
        log.warning(
            "reload_exclude %s excludes *.py files: only reload_include patterns "
            "can trigger a reload",
            list(out["reload_exclude"]),
        )

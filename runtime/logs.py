"""Logging in every process: the runtime's handler, formats, log configs and the
one log file all processes share.

Design note
-----------
Each process sets up logging once, from the same ``LogSettings`` (the manager
sends them to every worker and custom process, restarted ones included):

* a log config (``log_config``: a dictConfig dict, or a JSON, YAML or INI file
  read once by the manager) is applied as it is; the levels it sets win;
* otherwise the runtime adds its own handler, unless the program configured
  logging itself: text (time, process name and pid, level, message) or one
  JSON object per line, on stderr or into ``log_file``.

One file, many processes: only the manager writes ``log_file``. Every other
process formats its records itself and sends each as one datagram over a unix
socket pair whose reading end the manager watches on its loop, so a record is
never split or interleaved with another, whatever its size (up to
``MAX_RECORD`` bytes) and however many processes log at once. The manager
reopens the file when it is moved away, as log rotation does.
"""

from __future__ import annotations

import configparser
import contextlib
import datetime
import io
import json
import logging
import logging.config
import logging.handlers
import multiprocessing
import os
import socket
import sys
from typing import Any

import attrs

from .children import manager_only, release
from .errors import ConfigError

FORMAT = "%(asctime)s %(processName)s[%(process)d] %(levelname)s %(message)s"
MAIN_NAME = "Runtime-Main"
FORMATS = ("text", "json")
MAX_RECORD = 60 * 1024  # bytes of one relayed record; longer ones are cut
_CUT = " [cut: record too long]"

log = logging.getLogger("runtime")


def process_name() -> str:
    name = multiprocessing.current_process().name
    return MAIN_NAME if name == "MainProcess" else name


# -- formats --


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if record.processName == "MainProcess":
            record.processName = MAIN_NAME
        return super().format(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created).astimezone()
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "process": (
                MAIN_NAME if record.processName == "MainProcess" else record.processName
            ),
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.name == "uvicorn.access" and _access_args(record.args):
            client, method, path, version, status = record.args  # type: ignore[misc]
            out.update(
                client=client, method=method, path=path, http=version, status=status
            )
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _access_args(args: object) -> bool:
    return isinstance(args, tuple) and len(args) == 5


def formatter(kind: str) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else TextFormatter()


# -- log configs --


@attrs.frozen
class LogConfig:
    """A log configuration read once: a dictConfig dict, or an INI file's text."""

    source: str  # what to call it in errors: the file, or the dict
    dict_config: dict[str, Any] | None = None
    ini_text: str | None = None

    def apply(self) -> None:
        try:
            if self.dict_config is not None:
                config = {"disable_existing_loggers": False, **self.dict_config}
                logging.config.dictConfig(config)
            else:
                logging.config.fileConfig(
                    io.StringIO(self.ini_text or ""), disable_existing_loggers=False
                )
        except Exception as exc:  # noqa: BLE001 - logging raises all kinds
            reason = _one_line(exc)
            if exc.__cause__ is not None:  # "Unable to configure handler": why
                reason = f"{reason}: {_one_line(exc.__cause__)}"
            elif isinstance(exc, KeyError):
                reason = f"missing {reason}"
            raise ConfigError(
                f"{self.source} cannot be applied ({reason}); fix it, see the "
                f"logging.config documentation"
            ) from None


def load_config(value: object) -> LogConfig | None:
    """``value`` (None, a dictConfig dict or a file path) as a LogConfig."""
    if value is None or isinstance(value, LogConfig):
        return value
    if isinstance(value, dict):
        if "version" not in value:
            raise ConfigError(
                'a log_config dict needs "version": 1 (see logging.config.dictConfig)'
            )
        return LogConfig("the log_config dict", dict_config=value)
    if not isinstance(value, str | os.PathLike):
        raise ConfigError(
            f"log_config must be a file path or a dictConfig dict, got {value!r}"
        )
    path = os.fspath(value)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"log config {path!r} cannot be read ({_one_line(exc)}); "
            f"give a JSON, YAML or INI file"
        ) from None
    kind = os.path.splitext(path)[1].lower()
    if kind == ".json":
        return LogConfig(f"log config {path!r}", dict_config=_parsed_json(path, text))
    if kind in (".yaml", ".yml"):
        return LogConfig(f"log config {path!r}", dict_config=_parsed_yaml(path, text))
    return LogConfig(f"log config {path!r}", ini_text=_checked_ini(path, text))


def _parsed_json(path: str, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"log config {path!r} is not valid JSON ({exc})") from None
    return _checked_dict(path, data)


def _parsed_yaml(path: str, text: str) -> dict[str, Any]:
    try:
        import yaml
    except ImportError:
        raise ConfigError(
            f"log config {path!r} is YAML, which needs PyYAML; "
            f"pip install 'runtime[yaml]' (or PyYAML), or use a JSON or INI file"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"log config {path!r} is not valid YAML ({_one_line(exc)})"
        ) from None
    return _checked_dict(path, data)


def _checked_dict(path: str, data: object) -> dict[str, Any]:
    if not isinstance(data, dict) or "version" not in data:
        raise ConfigError(
            f'log config {path!r} must be a mapping with "version": 1 '
            f"(the logging.config.dictConfig schema)"
        )
    return data


def _checked_ini(path: str, text: str) -> str:
    parser = configparser.ConfigParser()
    try:
        parser.read_string(text, source=path)
    except configparser.Error as exc:
        raise ConfigError(
            f"log config {path!r} is not a valid INI file ({_one_line(exc)})"
        ) from None
    if not parser.has_section("loggers"):
        raise ConfigError(
            f"log config {path!r} has no [loggers] section; an INI log config "
            f"follows the logging.config.fileConfig format (or name the file "
            f".json or .yaml for a dictConfig)"
        )
    return text


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# -- settings, per process --


@attrs.frozen
class LogSettings:
    """How one process logs; sent to every child the manager starts."""

    level: str = "INFO"
    access_log: bool = False
    format: str = "text"
    file: str | None = None
    config: LogConfig | None = None
    relay: socket.socket | None = None  # children: where the manager reads

    @classmethod
    def of(cls, options: Any, relay: socket.socket | None = None) -> LogSettings:
        return cls(
            level=options.log_level,
            access_log=options.access_log,
            format=options.log_format,
            file=options.log_file,
            config=options.log_config,
            relay=relay,
        )


def configure(settings: LogSettings | None = None, *, child: bool = False) -> None:
    """Set up this process's logging; ``child``: a process the manager started.

    Raises ConfigError if the log config or the log file cannot be used.
    """
    settings = settings or LogSettings()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_runtime", False)]:
        root.removeHandler(handler)  # an earlier set-up's, or a fork's inheritance
        handler.close()  # a log file's copy of the descriptor; stderr stays open
    if settings.config is not None:
        settings.config.apply()
    elif not root.handlers or settings.file or settings.format != "text":
        handler = _handler(settings, child)
        handler._runtime = True  # type: ignore[attr-defined]
        handler.setFormatter(formatter(settings.format))
        root.addHandler(handler)
    _set_levels(settings, default=settings.config is None)


def _handler(settings: LogSettings, child: bool) -> logging.Handler:
    if child and settings.relay is not None:
        return _ToManager(settings.relay)
    if settings.file:
        return open_file(settings.file)
    return logging.StreamHandler(sys.stderr)


def _set_levels(settings: LogSettings, default: bool) -> None:
    """The runtime's level and uvicorn's; a log config's own levels win."""
    levels = {
        "runtime": settings.level,
        # uvicorn's start-up chatter repeats per worker; keep its warnings only.
        "uvicorn.error": "DEBUG" if settings.level == "DEBUG" else "WARNING",
        "uvicorn.access": "INFO",
    }
    for name, level in levels.items():
        logger = logging.getLogger(name)
        if default or logger.level == logging.NOTSET:
            logger.setLevel(level)


def user_configured() -> bool:
    """Whether the root logger has handlers the runtime did not add."""
    return any(not getattr(h, "_runtime", False) for h in logging.getLogger().handlers)


# -- one file for every process --


class _File(logging.handlers.WatchedFileHandler):
    """The manager's log file; it also writes records other processes formatted.

    A file that cannot be written (its directory removed, or not writable after
    a rotation by a user the manager switched away from) must not stop the
    manager: its records go to stderr, with one line saying why, until the file
    can be written again.
    """

    _failing = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a bad record must not stop the caller
            self.handleError(record)
            return
        self.write_formatted(text)

    def write_formatted(self, text: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            try:
                self.reopenIfNeeded()
                if self.stream is None:
                    self.stream = self._open()
                self.stream.write(text + self.terminator)
                self.flush()
            except OSError as exc:
                self._fail(exc)
                sys.stderr.write(text + self.terminator)
                return
        if self._failing:
            self._failing = False
            sys.stderr.write(f"runtime: writing to {self.baseFilename} again\n")

    def _fail(self, exc: OSError) -> None:
        if self.stream is not None:
            with contextlib.suppress(OSError):
                self.stream.close()
            self.stream = None  # type: ignore[assignment]
        self.dev = self.ino = -1  # check the path again at the next record
        if not self._failing:
            self._failing = True
            sys.stderr.write(
                f"runtime: cannot write the log file {self.baseFilename} "
                f"({exc.strerror or exc}); records go to stderr until it can be "
                f"written again\n"
            )


def open_file(path: str) -> _File:
    try:
        return _File(path, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"log file {path!r} cannot be opened ({exc.strerror}); give a writable path"
        ) from None


class _ToManager(logging.Handler):
    """In a child: each record, formatted here, goes to the manager as one datagram."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.format(record).encode("utf-8", "replace")
            if len(data) > MAX_RECORD:
                data = self._shortened(record)
            self.sock.send(data)
        except Exception:  # noqa: BLE001 - logging must not break the caller
            self.handleError(record)

    def _shortened(self, record: logging.LogRecord) -> bytes:
        """The record formatted again with its message and traceback cut, so
        that a JSON line stays valid JSON."""
        message = record.getMessage()
        trace = (
            self.formatter.formatException(record.exc_info)
            if (record.exc_info and self.formatter)
            else record.exc_text
        )
        keep = MAX_RECORD // 2
        while keep > 64:
            short = logging.makeLogRecord(record.__dict__)
            short.msg, short.args = message[:keep] + _CUT, None
            short.exc_info = None
            short.exc_text = trace[:keep] + _CUT if trace else None
            data = self.format(short).encode("utf-8", "replace")
            if len(data) <= MAX_RECORD:
                return data
            keep //= 2
        return data[: MAX_RECORD - len(_CUT)] + _CUT.encode()


class LogRelay:
    """In the manager: the socket pair children log through, and its reader."""

    def __init__(self, file: _File) -> None:
        self.file = file
        self.reading, self.sending = socket.socketpair(
            socket.AF_UNIX, socket.SOCK_DGRAM
        )
        self.reading.setblocking(False)
        manager_only(self.reading)  # closed in forked children
        self._loop: Any = None

    @classmethod
    def for_root(cls) -> LogRelay | None:
        """The relay for the runtime's log file on the root logger, if any."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, _File) and getattr(handler, "_runtime", False):
                return cls(handler)
        return None

    def start(self, loop: Any) -> None:
        self._loop = loop
        loop.add_reader(self.reading.fileno(), self.drain)

    def drain(self) -> None:
        """Write every record waiting in the socket to the file."""
        while True:
            try:
                data = self.reading.recv(MAX_RECORD + 1024)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.file.write_formatted(data.decode("utf-8", "replace"))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.reading.fileno())
        self.drain()  # what the children sent before they ended
        release(self.reading)
        self.sending.close()

"""The inspector: an HTTP control service for a running group.

Design note
-----------
It runs in the manager's own event loop, served by the same uvicorn protocol
layer as the workers. A separate process would need a second channel to the
manager and its own supervision; in the loop, every request is a few
microseconds of work (read the state table, or record a restart or scale
request for the conductor) and never waits for the group, so it cannot block
the manager. It uses no threads, so forking workers while it answers is safe.

Safe by default: it is off; it listens on localhost; listening anywhere else
without an API key is refused at start. With a key, every request must carry
``Authorization: Bearer KEY`` (compared in constant time); otherwise the answer
is 401 and nothing changes. ``health_without_key`` lets only ``GET /healthz``
and ``GET /readyz`` through without it.

Routes: ``GET /`` the status; ``GET /healthz`` (200 while the manager's loop
answers) and ``GET /readyz`` (200 while ``ProcessGroup.readiness()`` is ready,
else 503, with its reason); ``POST /reload`` (``{"zero_downtime": bool}``),
``POST /shutdown``, ``POST /scale`` (``{"replicas": n}``); and ``POST /<name>``
for each custom command: a function registered with ``@rt.inspector_command``
or a public method a subclass of Inspector adds (``rt.inspector_class``), called
with the JSON body as keyword arguments, on the manager's loop: the runtime's
own commands never block it, and the README asks that custom ones that take
time be coroutine functions. Nothing else is reachable: no private name, no
attribute of the service itself. Bad input gets a 4xx with a JSON error body
and leaves the group untouched; a command that raises is a 500. A request must
arrive whole within ``READ_TIMEOUT``, or its connection is closed.

The health port (``HealthChecks``) serves the two health routes alone, on the
same code and loop, without a key and without needing the inspector; since it
can change nothing and tells no more than readiness, it may listen anywhere.
"""

from __future__ import annotations

import hmac
import inspect
import ipaddress
import json
import logging
import math
import os
import socket
import time
import typing
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from . import serving, sockets
from .children import manager_only, release
from .config import RunOptions
from .errors import AddressError, BindError, ConfigError, GroupNotRunningError

if TYPE_CHECKING:
    from .group import ProcessGroup

log = logging.getLogger("runtime")

MAX_BODY = 16 * 1024  # bytes
READ_TIMEOUT = 10.0  # seconds for a request to arrive whole, or the connection closes
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]


def check_exposure(options: RunOptions) -> None:
    """Refuse to listen beyond loopback without an API key."""
    if options.inspector and not options.inspector_api_key:
        if not _loopback(options.inspector_host):
            raise ConfigError(
                f"the inspector would listen on {options.inspector_host!r}, beyond "
                f"this machine, without an API key; set INSPECTOR_API_KEY "
                f"(--inspector-api-key) or keep INSPECTOR_HOST on localhost"
            )


BUILT_IN = ("reload", "shutdown", "scale", "healthz", "readyz", "status")


def check_inspector_class(cls: object) -> None:
    """A subclass may add commands, not replace the built-in routes."""
    if not (isinstance(cls, type) and issubclass(cls, Inspector)):
        raise ConfigError(
            f"rt.inspector_class must be a subclass of runtime.Inspector, got {cls!r}"
        )
    replaced = [n for n in BUILT_IN if getattr(cls, n) is not getattr(Inspector, n)]
    if replaced:
        raise ConfigError(
            f"{cls.__name__} replaces the built-in inspector route(s) "
            f"{', '.join(replaced)}; give its commands other names"
        )


def check_hosts(options: RunOptions) -> None:
    """Resolve the inspector's and the health port's hosts before anything binds."""
    hosts = []
    if options.inspector:
        hosts.append(("the inspector host", options.inspector_host))
    if options.health_port is not None:
        hosts.append(("the health host", options.health_host))
    for what, host in hosts:
        try:
            socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise AddressError(
                f"cannot resolve {what} {host!r} ({exc.strerror}); pass an IP "
                f"address or a name this machine resolves"
            ) from None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Inspector:
    """Answers control requests for one ProcessGroup."""

    def __init__(
        self,
        group: ProcessGroup,
        name: str,
        options: RunOptions,
        commands: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.group = group
        self.name = name
        self.options = options
        self.started = time.monotonic()
        self.routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self.status,
            ("POST", "/reload"): self.reload,
            ("POST", "/shutdown"): self.shutdown,
            ("POST", "/scale"): self.scale,
            ("GET", "/healthz"): self.healthz,
            ("GET", "/readyz"): self.readyz,
        }
        for command, fn in {**self._own_commands(), **(commands or {})}.items():
            self.routes[("POST", f"/{command}")] = _keywords(fn)
        self._endpoint = Endpoint(self.app, "the inspector")

    def _own_commands(self) -> dict[str, Callable[..., Any]]:
        """Public methods a subclass adds; nothing of the base class itself."""
        base = set(dir(Inspector))
        return {
            name: getattr(self, name)
            for name in dir(type(self))
            if not name.startswith("_")
            and name not in base
            and callable(getattr(type(self), name))
        }

    async def start(self) -> None:
        options = self.options
        tls = None
        if options.inspector_tls_cert and options.inspector_tls_key:
            tls = (options.inspector_tls_cert, options.inspector_tls_key)
        address = await self._endpoint.start(
            options.inspector_host, options.inspector_port, tls
        )
        log.info("Inspector listening on %s", address)

    async def stop(self) -> None:
        await self._endpoint.stop()

    # -- the ASGI app --

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _json_app(self._answer, scope, receive, send)

    async def _answer(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[int, dict[str, Any]]:
        if not self._authorized(scope):
            return 401, {"error": "missing or wrong API key (Authorization: Bearer)"}
        path, method = scope["path"], scope["method"]
        handler = self.routes.get((method, path))
        if handler is None:
            if any(p == path for _, p in self.routes):
                return 405, {"error": f"{method} is not allowed on {path}"}
            return 404, {"error": f"no command at {path}"}
        try:
            arguments = await _json_body(scope, receive)
            result = handler(arguments)
            if isinstance(result, Awaitable):
                result = await result
        except _BadRequest as exc:
            return exc.status, {"error": str(exc)}
        except (ValueError, TypeError) as exc:  # a built-in command's arguments
            return 400, {"error": str(exc)}
        except GroupNotRunningError as exc:
            return 409, {"error": str(exc)}
        except _CommandFailed as exc:
            return 500, {"error": str(exc)}
        except Exception as exc:  # a command failed; the manager carries on
            log.exception("Inspector command %s %s failed", method, path)
            return 500, {"error": f"{type(exc).__name__}: {exc}"}
        if isinstance(result, Answer):
            return result.status, result.body
        return 200, result

    def _authorized(self, scope: dict[str, Any]) -> bool:
        key = self.options.inspector_api_key
        if not key:
            return True
        if (
            self.options.health_without_key
            and scope["method"] == "GET"
            and scope["path"] in HEALTH_PATHS
        ):
            return True
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.partition(b" ")
        # The scheme is case-insensitive (RFC 9110); the key is not.
        scheme_ok = scheme.lower() == b"bearer"
        return hmac.compare_digest(token.strip(), key.encode()) and scheme_ok

    # -- commands --

    def status(self, arguments: dict[str, Any]) -> dict[str, Any]:
        from . import __version__

        return {
            "name": self.name,
            "version": __version__,
            "start_method": self.group.method,
            "uptime": round(time.monotonic() - self.started, 3),
            "pid": os.getpid(),
            "workers": self.group.workers,
        }

    def healthz(self, arguments: dict[str, Any]) -> Answer:
        return Answer(*liveness())

    def readyz(self, arguments: dict[str, Any]) -> Answer:
        return Answer(*readiness(self.group))

    def reload(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Restart every server worker, or the processes ``name`` lists."""
        extra = sorted(set(arguments) - {"zero_downtime", "name"})
        if extra:
            raise ValueError(f"unexpected argument(s): {', '.join(extra)}")
        zero_downtime = _typed(arguments, "zero_downtime", bool, False)
        name = _typed(arguments, "name", str, None)
        if name is None:
            self.group.restart(all_workers=True, zero_downtime=zero_downtime)
        else:
            self.group.restart(name, zero_downtime=zero_downtime)
        return {"reloading": name or True, "zero_downtime": zero_downtime}

    def shutdown(self, arguments: dict[str, Any]) -> dict[str, Any]:
        _only(arguments, None, None, None)
        log.info("Inspector: shutdown requested")
        self.group.terminate()
        return {"stopping": True}

    def scale(self, arguments: dict[str, Any]) -> dict[str, Any]:
        replicas = _only(arguments, "replicas", int, None)
        if replicas is None:
            raise ValueError('scale needs {"replicas": N}')
        self.group.scale(replicas)
        return {"replicas": replicas}


@attrs.frozen
class Answer:
    """A command's reply with a status of its own (not 200)."""

    status: int
    body: dict[str, Any]


HEALTH_PATHS = ("/healthz", "/readyz")


def liveness() -> tuple[int, dict[str, Any]]:
    """/healthz: answering at all means the manager's loop runs."""
    return 200, {"alive": True}


def readiness(group: ProcessGroup) -> tuple[int, dict[str, Any]]:
    """/readyz: 200 while the group serves at full strength, else 503."""
    ready, reason = group.readiness()
    return (200 if ready else 503), {"ready": ready, "reason": reason}


class HealthChecks:
    """/healthz and /readyz alone, on a port of their own, without a key.

    Served on the manager's loop like the inspector (and by the same code), but
    it needs neither the inspector nor its key, and nothing else is reachable
    through it, so it may listen beyond this machine.
    """

    def __init__(self, group: ProcessGroup, options: RunOptions) -> None:
        self.group = group
        self.options = options
        self._endpoint = Endpoint(self.app, "the health checks")

    async def start(self) -> None:
        options = self.options
        assert options.health_port is not None
        address = await self._endpoint.start(options.health_host, options.health_port)
        log.info("Health checks listening on %s (/healthz, /readyz)", address)

    async def stop(self) -> None:
        await self._endpoint.stop()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _json_app(self._answer, scope, receive, send)

    async def _answer(
        self, scope: dict[str, Any], receive: Any
    ) -> tuple[int, dict[str, Any]]:
        path, method = scope["path"], scope["method"]
        if path not in HEALTH_PATHS:
            return 404, {"error": f"no health check at {path}; try /healthz, /readyz"}
        if method != "GET":
            return 405, {"error": f"{method} is not allowed on {path}"}
        if path == "/healthz":
            return liveness()
        return readiness(self.group)


class Endpoint:
    """One HTTP listener on the manager's loop, served by uvicorn's protocol
    layer: the inspector's, and the health port's."""

    def __init__(self, app: Any, what: str) -> None:
        self.app = app
        self.what = what
        self._server: serving.AsgiServer | None = None
        self._sock: socket.socket | None = None

    async def start(
        self, host: str, port: int, tls: tuple[str, str] | None = None
    ) -> str:
        """Bind and serve; return the address. BindError if it cannot."""
        self._sock = sockets.tcp(host, port, 128, inheritable=False)
        manager_only(self._sock)
        self._server = serving.AsgiServer(
            self.app,
            keep_alive_timeout=5,
            access_log=False,
            backlog=128,
            tls=tls,
            websockets=False,
            read_timeout=READ_TIMEOUT,
        )
        try:
            await self._server.start(self._sock)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise BindError(f"cannot serve {self.what}: {exc}") from None
        address = sockets.describe(self._sock)
        if tls:
            address = address.replace("http://", "https://", 1)
        return address

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.drain(0, forced=True)
            await self._server.close()
        if self._sock is not None:
            release(self._sock)


async def _json_app(
    answer: Callable[[dict[str, Any], Any], Awaitable[tuple[int, dict[str, Any]]]],
    scope: dict[str, Any],
    receive: Any,
    send: Any,
) -> None:
    """An ASGI app of JSON replies: ``answer`` says the status and the body."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    status, body = await answer(scope, receive)
    data = json.dumps(body, default=_json_default).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": data})


_CHECKED = (bool, int, float, str, list, dict)  # annotations checked per call


def _keywords(fn: Callable[..., Any]) -> Handler:
    """A custom command: the JSON body becomes its keyword arguments (and a
    list under ``args``, unless it has a parameter of that name, its positional
    ones).

    Arguments that do not fit its signature, or its plain annotations (bool,
    int, float, str, list, dict), are a 400. It runs on the manager's loop (no
    thread, so forking workers stays safe): a slow one must be a coroutine
    function that awaits. Whatever the command raises is a 500.
    """
    signature = inspect.signature(fn)
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable annotations: not checked
        hints = {}

    async def command(arguments: dict[str, Any]) -> dict[str, Any]:
        positional: list[Any] = []
        if "args" in arguments and "args" not in signature.parameters:
            positional = arguments.pop("args")  # fills parameters in order
            if not isinstance(positional, list):
                raise _BadRequest(400, f"args must be a list, got {positional!r}")
        try:
            bound = signature.bind(*positional, **arguments)
        except TypeError as exc:
            raise _BadRequest(400, f"bad arguments for this command: {exc}") from None
        for key, value in bound.arguments.items():
            kind = hints.get(key)
            if kind in _CHECKED and not _fits(value, kind):
                raise _BadRequest(400, f"{key} must be {kind.__name__}, got {value!r}")
        try:
            result = fn(*bound.args, **bound.kwargs)
            if inspect.isawaitable(result):
                result = await result
        except (Exception, SystemExit, KeyboardInterrupt) as exc:
            log.exception("Inspector command %s failed", getattr(fn, "__name__", fn))
            raise _CommandFailed(f"{type(exc).__name__}: {exc}") from None
        return {"result": result}

    return command


def _fits(value: object, kind: type) -> bool:
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _only(arguments: dict[str, Any], key: str | None, kind: Any, default: Any) -> Any:
    """The one argument ``key`` (of type ``kind``), refusing any other."""
    extra = sorted(set(arguments) - {key})
    if extra:
        raise ValueError(f"unexpected argument(s): {', '.join(extra)}")
    return default if key is None else _typed(arguments, key, kind, default)


def _typed(arguments: dict[str, Any], key: str, kind: Any, default: Any) -> Any:
    if key not in arguments:
        return default
    value = arguments[key]
    if not _fits(value, kind):
        raise ValueError(f"{key} must be {kind.__name__}, got {value!r}")
    return value


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _CommandFailed(Exception):
    """A custom command raised; the message is its error."""


async def _json_body(scope: dict[str, Any], receive: Any) -> dict[str, Any]:
    declared = dict(scope["headers"]).get(b"content-length", b"0")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise _BadRequest(413, f"body over {MAX_BODY} bytes")
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise _BadRequest(413, f"body over {MAX_BODY} bytes")
        if not message.get("more_body"):
            break
    if not body.strip():
        return {}
    try:
        arguments = json.loads(
            body, parse_constant=_no_constant, parse_float=_finite_float
        )
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _BadRequest(400, f"body is not JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise _BadRequest(400, "body must be a JSON object")
    return arguments


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        message = await receive()
        await send({"type": message["type"] + ".complete"})
        if message["type"] == "lifespan.shutdown":
            return


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value)

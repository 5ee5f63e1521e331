"""``Runtime``: what a user builds, decorates with listeners and runs.

A Runtime registers itself by name when it is created. A worker started with spawn
or forkserver re-imports the user's module, which creates the Runtime again; the
worker then finds it by that name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from multiprocessing.context import BaseContext
from typing import Any, ClassVar

import attrs

from . import logs, pidfile, privileges, reloader, sockets, start_methods, titles
from .config import Config, RunOptions
from .errors import (
    BindError,
    ConfigError,
    SharedContextError,
    StartMethodConflictError,
    UnguardedRunError,
)
from .group import ProcessGroup
from .inspector import (
    BUILT_IN,
    HealthChecks,
    Inspector,
    check_exposure,
    check_hosts,
    check_inspector_class,
)
from .listeners import Listeners
from .multiplexer import Multiplexer
from .shared import SharedContext
from .worker import WorkerSpec, run_single

log = logging.getLogger("runtime")

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


class _RuntimeType(type):
    def __setattr__(cls, name: str, value: Any) -> None:
        if name == "start_method":
            _check_start_method_change(value)
        super().__setattr__(name, value)


def _check_start_method_change(value: Any) -> None:
    if Runtime._active_runs:
        raise StartMethodConflictError(
            f"Runtime.start_method = {value!r} was set after run() began; set it "
            f"in global scope, before run() (for example right after the imports)"
        )
    start_methods.validate(value)


def _listener(event: str) -> Callable[[Runtime, Callable], Callable]:
    def register(self: Runtime, fn: Callable) -> Callable:
        return self.listeners.add(event, fn)

    register.__name__ = event
    register.__doc__ = f"Decorator: call ``fn(rt)`` on {event.replace('_', ' ')}."
    return register


class Runtime(metaclass=_RuntimeType):
    """A server application run by the runtime on one or more worker processes.

    Serve exactly one of: ``app`` (an ASGI 3 app), ``protocol`` (a factory of
    ``asyncio.Protocol`` objects) or ``serve`` (``async def serve(sock)``).
    """

    start_method: str = start_methods.DEFAULT

    _registry: ClassVar[dict[str, Runtime]] = {}
    _active_runs: ClassVar[int] = 0

    def __init__(
        self,
        name: str,
        app: Any = None,
        *,
        protocol: Callable[[], asyncio.BaseProtocol] | None = None,
        serve: Callable[[Any], Awaitable[None]] | None = None,
        config: Config | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(
                f"Runtime name {name!r} is not valid; use letters, digits, "
                f"'_', '-' or '.', e.g. Runtime('shop')"
            )
        if name in Runtime._registry:
            raise ConfigError(
                f"a Runtime named {name!r} already exists in this process; give "
                f"each Runtime its own name"
            )
        self.name = name
        self.kind, self.target = _servable(app, protocol, serve)
        self.config = config if config is not None else Config()
        self.listeners = Listeners()
        self.shared_ctx = SharedContext()
        self._manager: ProcessGroup | None = None
        self._mux: Multiplexer | None = None
        self._reloading = False
        # The settings in effect for the current run (rt.config with run()'s
        # arguments and the command line's on top), in the manager and workers.
        self.options: RunOptions | None = None
        self.import_target: str | None = None
        self.inspector_class: type[Inspector] = Inspector
        self.inspector_commands: dict[str, Callable[..., Any]] = {}
        self.module = sys._getframe(1).f_globals.get("__name__", "__main__")
        Runtime._registry[name] = self

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "start_method":
            _check_start_method_change(value)
        super().__setattr__(name, value)

    def __repr__(self) -> str:
        return f"Runtime({self.name!r}, {self.kind}={self.target!r})"

    @classmethod
    def lookup(cls, name: str) -> Runtime | None:
        return cls._registry.get(name)

    main_process_start = _listener("main_process_start")
    main_process_ready = _listener("main_process_ready")
    main_process_stop = _listener("main_process_stop")
    before_server_start = _listener("before_server_start")
    after_server_start = _listener("after_server_start")
    before_server_stop = _listener("before_server_stop")
    after_server_stop = _listener("after_server_stop")

    def inspector_command(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Decorator: make ``fn`` an inspector command, ``POST /<fn name>``."""
        name = getattr(fn, "__name__", "")
        if not callable(fn) or not name.isidentifier() or name.startswith("_"):
            raise ConfigError(
                f"an inspector command must be a public, named function, got {fn!r}"
            )
        if name in BUILT_IN:
            raise ConfigError(f"inspector command {name!r} is built in; rename it")
        self.inspector_commands[name] = fn
        return fn

    @property
    def manager(self) -> ProcessGroup:
        """The ProcessGroup, in the main process while run() serves."""
        if self._manager is None:
            where = "; in a server worker use rt.m" if self._mux is not None else ""
            raise RuntimeError(
                f"rt.manager exists only in the main process while run() serves "
                f"with a manager (not in single-process mode){where}"
            )
        return self._manager

    @property
    def multiplexer(self) -> Multiplexer:
        """This server worker's handle to the manager (also ``rt.m``)."""
        if self._mux is None:
            raise RuntimeError(
                "rt.m (the multiplexer) exists only in server worker processes "
                "under a manager (not in single-process mode); in the main process "
                "use rt.manager"
            )
        return self._mux

    m = multiplexer

    def enter_worker(self, shared: dict[str, Any], mux: Multiplexer) -> None:
        """Called once in a server worker process, before its listeners run."""
        self.shared_ctx.attach_all(shared)
        self._mux = mux

    @property
    def context(self) -> BaseContext:
        """The multiprocessing context the workers start from; build shared objects
        with it (``rt.context.Queue()``)."""
        return self._resolver().resolve()

    def _resolver(self) -> start_methods.StartMethodResolver:
        return start_methods.StartMethodResolver(
            self.start_method, reload=self._reloading
        )

    def run(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        uds: str | None = None,
        fd: int | None = None,
        workers: int | None = None,
        single_process: bool | None = None,
        ack_timeout: float | None = None,
        graceful_timeout: float | None = None,
        keep_alive_timeout: float | None = None,
        access_log: bool | None = None,
        log_level: str | None = None,
        log_format: str | None = None,
        log_file: str | None = None,
        log_config: str | dict[str, Any] | None = None,
        backlog: int | None = None,
        inspector: bool | None = None,
        inspector_host: str | None = None,
        inspector_port: int | None = None,
        inspector_api_key: str | None = None,
        inspector_tls_cert: str | None = None,
        inspector_tls_key: str | None = None,
        health_without_key: bool | None = None,
        health_port: int | None = None,
        health_host: str | None = None,
        pid_file: str | None = None,
        user: str | int | None = None,
        group: str | int | None = None,
        hang_timeout: float | None = None,
        max_requests: int | None = None,
        max_requests_jitter: int | None = None,
        max_lifetime: float | None = None,
        max_lifetime_jitter: float | None = None,
        max_worker_memory: int | None = None,
        auto_reload: bool | None = None,
        reload_dirs: list[str] | None = None,
        reload_include: list[str] | None = None,
        reload_exclude: list[str] | None = None,
    ) -> None:
        """Serve until stopped. Returns after a clean stop; exits with 1 when the
        group could not start or kept failing."""
        given = {k: v for k, v in locals().items() if k != "self"}
        code = self.serve_until_stopped(**given)
        if code:
            raise SystemExit(code)

    def serve_until_stopped(self, **given: Any) -> int:
        """Like ``run()`` but returns the exit code instead of exiting."""
        _check_not_bootstrapping()
        if self.kind is None:
            raise ConfigError(
                f"Runtime {self.name!r} has nothing to serve; pass app=, protocol= "
                f"or serve= when creating it"
            )
        options = RunOptions.build(self.config, ProcessGroup.THRESHOLD, **given)
        check_hosts(options)
        check_exposure(options)
        if options.inspector:
            check_inspector_class(self.inspector_class)
        self.options = options
        settings = logs.LogSettings.of(options)
        logs.configure(settings)
        if options.pid_file is not None:
            pidfile.check(options.pid_file)  # before anything binds
        if options.single_process:
            return run_single(self, options)
        self._reloading = options.auto_reload
        ctx = self._resolver().resolve()
        self._check_importable(ctx.get_start_method())
        sock = sockets.listen(options)
        Runtime._active_runs += 1
        try:
            log.info("Listening on %s", sockets.describe(sock))
            relay = logs.LogRelay.for_root() if options.log_file else None
            titles.set_title(f"manager [{self.name}]")
            with pidfile.held(options.pid_file):
                self._manager = ProcessGroup(ctx, sock, options)
                self._manager.log = attrs.evolve(
                    settings, relay=relay.sending if relay else None
                )
                self._manager.log_relay = relay
                if options.auto_reload:
                    self._manager.reload_spec = self._reload_spec(options)
                return asyncio.run(self._manage(self._manager, options))
        finally:
            Runtime._active_runs -= 1
            self._manager = None
            self._reloading = False
            sockets.close(sock, options)

    async def _manage(self, group: ProcessGroup, options: RunOptions) -> int:
        group.watch_signals()
        if group.log_relay is not None:
            group.log_relay.start(asyncio.get_running_loop())
        uds = options.uds if options.fd is None else None
        inspector = None
        if options.inspector:
            inspector = self.inspector_class(
                group, self.name, options, self.inspector_commands
            )
        health = None
        if options.health_port is not None:
            health = HealthChecks(group, options)
        try:
            for service, what in ((inspector, "Inspector"), (health, "Health checks")):
                if service is None:
                    continue
                try:
                    await service.start()
                except BindError as exc:
                    log.error("%s: %s", what, exc)
                    return 1
            # Everything that may need root is bound: the rest runs unprivileged.
            identity = privileges.resolve(options.user, options.group)
            privileges.drop(identity, uds, fresh=group.method != "fork")
            if group.method == "forkserver":
                start_methods.start_forkserver(group.context, self._preload())
            try:
                start = self.main_process_start_listeners()
                if not await group.unless_stopped(start):
                    return group.exit_code
            except Exception:
                log.exception("A main_process_start listener failed; not starting")
                return 1
            try:
                start_methods.check_transferable(group.method, self.shared_ctx.items())
            except SharedContextError as exc:
                log.error("%s", exc)
                return 1
            return await group.run(self._spec(options), self._main_ready)
        finally:
            await group.shutdown()  # custom processes may run even if start failed
            for service in (inspector, health):
                if service is not None:
                    await service.stop()
            await self._main_stop()
            if group.log_relay is not None:
                group.log_relay.close()

    async def main_process_start_listeners(self, *, single: bool = False) -> None:
        """Run main_process_start; shared_ctx accepts objects only meanwhile."""
        self.shared_ctx.open_for_listeners(True, single=single)
        try:
            await self.listeners.run("main_process_start", self)
        finally:
            self.shared_ctx.open_for_listeners(False)

    async def _main_ready(self) -> None:
        await self.listeners.run("main_process_ready", self)

    async def _main_stop(self) -> None:
        try:
            await self.listeners.run("main_process_stop", self)
        except Exception:
            log.exception("A main_process_stop listener failed")

    def _spec(self, options: RunOptions) -> WorkerSpec:
        return WorkerSpec(
            runtime_name=self.name,
            module=self.module,
            target=self.import_target,
            options=options,
            shared=self.shared_ctx.items(),
            log=self._manager.log if self._manager else logs.LogSettings(),
        )

    def _check_importable(self, method: str) -> None:
        main = sys.modules.get("__main__")
        if (
            method != "fork"
            and self.import_target is None
            and self.module in ("__main__", "__mp_main__")
            and not getattr(main, "__file__", None)
        ):
            raise StartMethodConflictError(
                f"Runtime {self.name!r} was created in a main module that has no "
                f"file (python -c, or an interactive session), but {method} "
                f"workers find it by importing that file again. Put the Runtime "
                f"in a module file, or set Runtime.start_method = 'fork'"
            )

    def _app_module(self) -> str:
        if self.import_target is not None:
            return self.import_target.partition(":")[0]
        return self.module

    def _reload_spec(self, options: RunOptions) -> reloader.ReloadSpec:
        roots = [reloader.source_root(self._app_module()), *options.reload_dirs]
        return reloader.ReloadSpec(
            roots=tuple(dict.fromkeys(roots)),
            include=("*.py", *options.reload_include),
            exclude=options.reload_exclude,
            ignore_paths=tuple(os.path.abspath(p) for p in [options.uds] if p),
        )

    def _preload(self) -> list[str]:
        # Libraries only: the user's own modules are imported afresh by each
        # worker, so that a restart serves the code that is on disk now.
        own = self._app_module().partition(".")[0]
        return [
            "runtime.worker",
            "uvloop",
            "uvicorn.protocols.http.httptools_impl",
            *(p for p in start_methods.installed_packages() if p != own),
        ]


def _servable(app: Any, protocol: Any, serve: Any) -> tuple[str | None, Any]:
    pairs = (("app", app), ("protocol", protocol), ("serve", serve))
    given = {kind: value for kind, value in pairs if value is not None}
    if len(given) > 1:
        raise ConfigError(
            f"pass only one of app=, protocol=, serve=; got {', '.join(given)}"
        )
    if not given:
        return None, None
    kind, target = next(iter(given.items()))
    if not callable(target):
        raise ConfigError(f"{kind}= must be callable, got {target!r}")
    return kind, target


_importing: list[str] = []  # the modules `runtime run` is importing as targets


@contextlib.contextmanager
def importing_target(module_name: str) -> Iterator[None]:
    """While ``runtime run`` imports a target's module, run() refuses to serve."""
    _importing.append(module_name)
    try:
        yield
    finally:
        _importing.pop()


def _check_not_bootstrapping() -> None:
    if _importing:
        raise UnguardedRunError(
            f"run() was called while `runtime run` was importing {_importing[-1]!r}, "
            f"which serves the target itself; call run() only under "
            f"`if __name__ == '__main__':`"
        )
    # Set by multiprocessing while a spawn/forkserver child re-imports __main__.
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        main = sys.modules.get("__main__")
        error = UnguardedRunError(
            f"run() was called while a worker process was importing "
            f"{getattr(main, '__file__', '__main__')}; worker processes import that "
            f"module again, so call run() only under `if __name__ == '__main__':`"
        )
        # One log line, not a traceback per worker: the worker is not running
        # yet, and the manager explains the failure too.
        logs.configure()
        log.error("%s", error)
        raise SystemExit(1)

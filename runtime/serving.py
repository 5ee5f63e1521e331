"""What a worker serves on the inherited socket, and how it drains.

Three kinds of target, one interface (``start(sock)``, ``drain(deadline)``,
``close()``, ``finished``):

* ``AsgiServer``: an ASGI 3 app over HTTP/1.1 and websockets. The protocol layer
  is uvicorn's (httptools); this module owns only accepting and draining.
* ``ProtocolServer``: a factory of raw ``asyncio.Protocol`` objects.
* ``CallableServer``: ``async def serve(sock)``; cancelled to stop.

Draining an HTTP server, in order: stop accepting; tell every busy connection that
its response is the last one (``Connection: close``); give idle keep-alive
connections a short grace, during which a request that arrives is answered and the
connection then closed; close the idle ones still left; wait for the rest until the
deadline; then abort whatever remains.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, Protocol

import uvicorn
from uvicorn.server import ServerState

from .errors import StartupError

log = logging.getLogger("runtime")

IDLE_GRACE = 1.0  # seconds an idle keep-alive connection may still send a request


class Server(Protocol):
    finished: asyncio.Future[None]
    # Called for each HTTP request (ASGI) or connection (protocol factory).
    on_request: Callable[[], None] | None

    async def start(self, sock: socket.socket) -> None: ...
    # forced: the stop was forced, so close at once and do not warn of a timeout
    async def drain(self, deadline: float, *, forced: bool = False) -> None: ...
    async def close(self) -> None: ...


class _Connections(set):
    """uvicorn's set of open connections, telling a waiter when it empties."""

    def __init__(self) -> None:
        super().__init__()
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, item: Any) -> None:
        super().add(item)
        self.empty.clear()

    def discard(self, item: Any) -> None:
        super().discard(item)
        if not self:
            self.empty.set()

    def remove(self, item: Any) -> None:
        super().remove(item)
        if not self:
            self.empty.set()


class AsgiServer:
    def __init__(
        self,
        app: Any,
        *,
        keep_alive_timeout: float,
        access_log: bool,
        backlog: int,
        tls: tuple[str, str] | None = None,
        websockets: bool = True,
        read_timeout: float | None = None,
    ) -> None:
        self.config = uvicorn.Config(
            app,
            http="httptools",
            ws="auto" if websockets else "none",
            lifespan="auto",
            interface="asgi3",
            log_config=None,
            access_log=access_log,
            timeout_keep_alive=keep_alive_timeout,
            proxy_headers=False,
            server_header=False,
            headers=[("server", "runtime")],
            backlog=backlog,
            ssl_certfile=tls[0] if tls else None,
            ssl_keyfile=tls[1] if tls else None,
        )
        # Seconds a request may take to arrive whole (headers and body); None:
        # no limit. The connection is closed when it runs out.
        self.read_timeout = read_timeout
        self.state = ServerState()
        self.state.connections = _Connections()
        self.draining = False
        self.finished: asyncio.Future[None] = asyncio.Future()
        self.on_request: Callable[[], None] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._lifespan: Any = None
        self._headers_timer: asyncio.TimerHandle | None = None

    async def start(self, sock: socket.socket) -> None:
        self.config.load()
        self._lifespan = self.config.lifespan_class(self.config)
        await self._lifespan.startup()
        if self._lifespan.should_exit:
            raise StartupError("the ASGI app's lifespan startup failed (see above)")
        protocol = _draining_protocol(self.config.http_protocol_class, self)
        state, app_state = self.state, self._lifespan.state

        def factory() -> asyncio.Protocol:
            return protocol(config=self.config, server_state=state, app_state=app_state)

        loop = asyncio.get_running_loop()
        self._refresh_headers()
        self._server = await loop.create_server(
            factory, sock=sock, backlog=self.config.backlog, ssl=self.config.ssl
        )

    def _refresh_headers(self) -> None:
        # The Date header changes once a second; uvicorn's protocol reads it from
        # the shared state instead of formatting it per response.
        date = formatdate(usegmt=True).encode()
        self.state.default_headers = [(b"date", date), *self.config.encoded_headers]
        loop = asyncio.get_running_loop()
        self._headers_timer = loop.call_later(1.0, self._refresh_headers)

    async def drain(self, deadline: float, *, forced: bool = False) -> None:
        self.draining = True
        if self._headers_timer is not None:
            self._headers_timer.cancel()
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        connections = self.state.connections
        for conn in list(connections):
            if not _idle(conn):
                conn.shutdown()
        grace = min(IDLE_GRACE, max(0.0, deadline - loop.time()))
        if await _wait(connections.empty, grace):
            return
        for conn in list(connections):
            conn.shutdown()  # idle ones close now; busy ones are already marked
        if not await _wait(connections.empty, deadline - loop.time()):
            if not forced:
                log.warning(
                    "Graceful timeout reached with %d connection(s) open; closing them",
                    len(connections),
                )
            for conn in list(connections):
                conn.transport.close()
        for task in list(self.state.tasks):
            task.cancel()

    async def close(self) -> None:
        if self._lifespan is not None and not self._lifespan.should_exit:
            await self._lifespan.shutdown()


def _idle(conn: Any) -> bool:
    cycle = getattr(conn, "cycle", False)
    return cycle is None or (cycle is not False and cycle.response_complete)


def _draining_protocol(base: type, server: AsgiServer) -> type:
    """uvicorn's HTTP protocol, answering with ``Connection: close`` while draining."""

    class DrainingProtocol(base):  # type: ignore[misc, valid-type]
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._await_request()

        def connection_lost(self, exc: Exception | None) -> None:
            self._request_arrived()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._await_request()

        def on_message_complete(self) -> None:
            self._request_arrived()
            super().on_message_complete()

        def _await_request(self) -> None:
            if server.read_timeout is not None:
                self._request_arrived()
                loop = asyncio.get_running_loop()
                self._read_timer = loop.call_later(
                    server.read_timeout, self.transport.close
                )

        def _request_arrived(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if server.draining and self.cycle is not None:
                self.cycle.keep_alive = False
            if server.on_request is not None:
                server.on_request()

    return DrainingProtocol


class ProtocolServer:
    def __init__(self, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self.factory = factory
        self.finished: asyncio.Future[None] = asyncio.Future()
        self.on_request: Callable[[], None] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._empty = asyncio.Event()
        self._empty.set()

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._tracked, sock=sock)

    def _tracked(self) -> asyncio.BaseProtocol:
        # Wrap the two connection callbacks on the instance so the drain knows
        # which transports are open, whatever kind of protocol the user made.
        proto = self.factory()
        made, lost = proto.connection_made, proto.connection_lost
        mine: list[asyncio.BaseTransport] = []

        def connection_made(transport: asyncio.BaseTransport) -> None:
            if self.on_request is not None:
                self.on_request()
            mine.append(transport)
            self._transports.add(transport)
            self._empty.clear()
            made(transport)

        def connection_lost(exc: Exception | None) -> None:
            self._transports.difference_update(mine)
            if not self._transports:
                self._empty.set()
            lost(exc)

        proto.connection_made = connection_made  # type: ignore[method-assign]
        proto.connection_lost = connection_lost  # type: ignore[method-assign]
        return proto

    async def drain(self, deadline: float, *, forced: bool = False) -> None:
        if self._server is not None:
            self._server.close()
        loop = asyncio.get_running_loop()
        if not await _wait(self._empty, deadline - loop.time()):
            if not forced:
                log.warning(
                    "Graceful timeout reached with %d connection(s) open; closing them",
                    len(self._transports),
                )
            for transport in list(self._transports):
                transport.close()

    async def close(self) -> None:
        return None


class CallableServer:
    def __init__(self, serve: Callable[[socket.socket], Awaitable[None]]) -> None:
        self.serve = serve
        self.finished: asyncio.Future[None] = asyncio.Future()
        self.on_request: Callable[[], None] | None = None  # not counted
        self._task: asyncio.Task[None] | None = None

    async def start(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self._task = asyncio.ensure_future(self.serve(sock))
        self._task.add_done_callback(self._done)
        await asyncio.sleep(0)  # let it run to its first await
        if self._task.done() and not self._task.cancelled():
            self._task.result()  # a serve() that failed at once fails start-up

    def _done(self, task: asyncio.Task[None]) -> None:
        if self.finished.done():
            return
        if task.cancelled():
            self.finished.set_result(None)
        elif task.exception() is not None:
            self.finished.set_exception(task.exception())
        else:
            self.finished.set_result(None)

    async def drain(self, deadline: float, *, forced: bool = False) -> None:
        if self._task is None or self._task.done():
            return
        self._task.cancel()
        loop = asyncio.get_running_loop()
        done, _ = await asyncio.wait({self._task}, timeout=deadline - loop.time())
        if not done and not forced:
            log.warning("serve() did not finish within the graceful timeout")

    async def close(self) -> None:
        return None


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    if event.is_set():
        return True
    if timeout <= 0:
        return False
    try:
        await asyncio.wait_for(event.wait(), timeout)
    except TimeoutError:
        return False
    return True


def build(kind: str, target: Any, options: Any) -> Server:
    if kind == "app":
        return AsgiServer(
            target,
            keep_alive_timeout=options.keep_alive_timeout,
            access_log=options.access_log,
            backlog=options.backlog,
        )
    if kind == "protocol":
        return ProtocolServer(target)
    return CallableServer(target)

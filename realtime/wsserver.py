"""The node's listening WebSocket server: accepts TCP connections as :class:`WsSocket` protocols.

Owns the listening socket, the set of live sockets, the tasks they leave behind (an async HTTP
answer such as ``/readyz``, a closed connection's clean-up), the one-callback-per-tick write
flush, and the drain: :meth:`WsServer.close` stops accepting, refuses handshakes still in flight
with 503 and closes every open socket with the given code; :meth:`WsServer.wait_closed` returns
once every TCP connection is gone and every clean-up has run. Each ``ServerProtocol`` gets the
message size limit and, when asked for, permessage-deflate; Origin and the HTTP routes are the
``process_request`` hook's (see :mod:`realtime.server`).

It knows nothing of frames' meaning: ``factory`` turns an opened socket into its handler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.extensions.permessage_deflate import enable_server_permessage_deflate
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from realtime.transport import FlushQueue, Handler, ProcessRequest, WsSocket

log = logging.getLogger("realtime.wsserver")


class WsServer:
    """Serves WebSockets on one port; every socket's handler comes from ``factory``."""

    def __init__(
        self,
        factory: Callable[[WsSocket], Handler],
        *,
        process_request: ProcessRequest,
        max_size: int,
        compression: bool = False,
        ping_interval_s: float | None = 20.0,
        ping_timeout_s: float | None = 20.0,
        open_timeout_s: float = 10.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        self.factory, self._process_request = factory, process_request
        self.max_size = max_size
        self.extensions = enable_server_permessage_deflate(None) if compression else None
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        self.open_timeout_s, self.close_timeout_s = open_timeout_s, close_timeout_s
        self.sockets: set[WsSocket] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.get_running_loop()
        self._flush = FlushQueue(self._loop)
        self._changed = asyncio.Event()

    async def start(
        self, host: str, port: int, *, reuse_port: bool = False, backlog: int = 4096
    ) -> None:
        self._server = await self._loop.create_server(
            self._accept, host, port, reuse_port=reuse_port or None, backlog=backlog
        )

    def _accept(self) -> WsSocket:
        protocol = ServerProtocol(extensions=self.extensions, max_size=self.max_size)
        sock = WsSocket(
            self,
            protocol,
            ping_interval_s=self.ping_interval_s,
            ping_timeout_s=self.ping_timeout_s,
            open_timeout_s=self.open_timeout_s,
            close_timeout_s=self.close_timeout_s,
        )
        self.sockets.add(sock)
        return sock

    @property
    def open_count(self) -> int:
        """Sockets past the handshake and not closing (the ``mm_rt_connections_open`` gauge)."""
        return sum(1 for sock in self.sockets if sock.is_open)

    # -- what sockets ask of their server (realtime.transport.Host) --------------------------

    def process_request(
        self, sock: WsSocket, request: Request
    ) -> Response | Coroutine[Any, Any, Response | None] | Any:
        return self._process_request(sock, request)

    def is_serving(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def opened(self, sock: WsSocket) -> Handler:
        return self.factory(sock)

    def gone(self, sock: WsSocket, cleanup: Coroutine[Any, Any, None] | None) -> None:
        self.sockets.discard(sock)
        if cleanup is not None:
            self.spawn(cleanup)
        self._changed.set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._changed.set()
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("socket task failed", exc_info=exc)

    def flush_soon(self, sock: WsSocket) -> None:
        self._flush.add(sock)

    # -- the drain ---------------------------------------------------------------------------

    def close(self, code: int, reason: str) -> None:
        """Stop accepting; close every open socket with ``code`` (handshakes in flight get 503)."""
        if self._server is not None:
            self._server.close()
        for sock in tuple(self.sockets):
            if not sock.is_open:
                continue
            if sock.handler is not None:
                sock.handler.close(code, reason)
            else:
                sock.close(code, reason)

    async def wait_closed(self) -> None:
        """Until every TCP connection is gone and every socket task has finished."""
        while self.sockets or self._tasks:
            self._changed.clear()
            await self._changed.wait()
        if self._server is not None:
            await self._server.wait_closed()

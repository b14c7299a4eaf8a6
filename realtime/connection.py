"""The connection driver: the only code that awaits on one WebSocket.

Owns one socket's I/O: it reads frames into the :class:`~realtime.protocol.Protocol`, performs
the actions the protocol asks for through the :class:`~realtime.node.Node` (auth, membership
refresh and sync are awaited in order; sends and reads are queued to the batch writer without
awaiting), writes the frames it produces, and runs its one timer (auth timeout, reauth notice,
token lapse) as a loop callback, not a task. Writes never await: every frame written to a socket
in one loop tick is framed here (an unmasked server text frame is a 2-10 byte header and the
payload) and queued, and one loop callback writes them all with a single ``transport.write``
(acks and deliveries of a batch then cost one syscall per socket, not one per frame). A socket
whose transport buffer plus queue is past the high-water mark is closed with
:data:`Close.SLOW_CONSUMER`. With a negotiated extension (deflate) frames go through
``websockets.broadcast`` instead, one by one.

It decides nothing about what a frame means (the protocol does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import time
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.connection import broadcast
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from common.codes import Close, Err
from realtime.domain import ReadOutcome, SendOutcome
from realtime.node import Node
from realtime.presence import PresenceUnavailable
from realtime.protocol import (
    AuthAction,
    CloseOut,
    Out,
    Output,
    PersistRead,
    PersistSend,
    PresenceAction,
    Protocol,
    RefreshAction,
    SyncAction,
    TypingAction,
)

log = logging.getLogger("realtime.connection")

#: Query parameters that would carry a credential (refused: URLs land in logs and histories).
_TOKEN_PARAMS = frozenset({"token", "access_token", "jwt", "auth", "authorization", "bearer"})


#: Headers of unmasked, unfragmented server text frames (RFC 6455 section 5.2) by length class.
_SHORT = [bytes((0x81, n)) for n in range(126)]
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def text_frame(data: bytes) -> bytes:
    """The header of a server text frame carrying ``data`` (server frames are not masked)."""
    n = len(data)
    if n < 126:
        return _SHORT[n]
    if n < 65536:
        return _MEDIUM.pack(0x81, 126, n)
    return _LONG.pack(0x81, 127, n)


def token_in_query(path: str) -> bool:
    query = urlsplit(path).query
    if not query:
        return False
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name.lower() in _TOKEN_PARAMS or (value.count(".") == 2 and len(value) > 40):
            return True
    return False


def bearer_token(headers: Headers) -> str | None:
    value = headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Connection:
    """One authenticated (or authenticating) socket."""

    def __init__(self, ws: ServerConnection, node: Node) -> None:
        self.ws, self.node = ws, node
        self.session = node.new_session()
        self.user_id = 0
        #: The ``ver`` claim of the token this socket last authenticated with (safety events
        #: close only sockets whose token is older than a bump).
        self.token_version = 0
        self.closing = False
        self.attached = False
        self.proto: Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        self._closer: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        #: Headers and payloads queued this loop tick, and their size (see :meth:`write`).
        self._queue: list[bytes] = []
        self._queued = 0
        #: No extension negotiated: frames can be built here rather than by websockets.
        self._plain = not ws.protocol.extensions

    # -- the read loop -----------------------------------------------------------------------

    async def run(self) -> None:
        request = self.ws.request
        assert request is not None
        if token_in_query(request.path):
            await self.ws.close(Close.TOKEN_IN_QUERY, "token in query string")
            return
        if self.node.sndbuf:
            # A bounded kernel buffer makes the high-water mark mean what it says.
            sock = self.ws.transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.node.sndbuf)
        self.proto = proto = Protocol(
            self.node.config,
            session=self.session,
            now=time.time(),
            header_token=bearer_token(request.headers),
        )
        try:
            await self._pump()
            while not self.closing:
                try:
                    message = await self.ws.recv()
                except ConnectionClosed:
                    break
                if isinstance(message, str):
                    proto.receive_text(message, time.time())
                else:
                    proto.receive_binary(time.time())
                await self._pump()
        except Exception:
            log.exception("connection failed", extra={"conn": self.session, "user": self.user_id})
            self.close(Close.INTERNAL, "internal error")
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self.attached:
                self.attached = False
                await self.node.detach(self)
            if self._closer is not None:
                with contextlib.suppress(Exception):
                    await self._closer
            if self.user_id:
                log.info(
                    "socket closed",
                    extra={"conn": self.session, "user": self.user_id, "code": self.ws.close_code},
                )

    async def _pump(self) -> None:
        """Write what the protocol produced and perform its actions until it has nothing left."""
        assert self.proto is not None
        while outputs := self.proto.take():
            for output in outputs:
                if not self._emit(output):
                    await self._perform(output)
        self._reschedule()

    def _emit(self, output: Output) -> bool:
        """Handle outputs that need no awaiting; False for the ones :meth:`_perform` awaits."""
        match output:
            case Out():
                self.write(output.data)
            case CloseOut():
                self._start_close(output.code, output.reason)
            case PersistSend():
                self.node.submit(output.request, self)
            case PersistRead():
                self.node.submit(output.request, self)
            case TypingAction():
                self.node.typing(output)
            case _:
                return False
        return True

    async def _perform(self, output: Output) -> None:
        assert self.proto is not None
        match output:
            case AuthAction():
                await self._authenticate(output)
            case SyncAction():
                page = await self.node.sync(self.user_id, output.positions, output.limit)
                if page is None:
                    self.proto.sync_failed(Err.DB_UNAVAILABLE, output.rid)
                else:
                    messages, end = page
                    self.proto.sync_finished(messages, end=end, rid=output.rid, gone=output.gone)
            case RefreshAction():
                memberships = await self.node.memberships(self.user_id)
                self.proto.memberships_loaded(memberships, output.retry, time.time())
            case PresenceAction():
                presence = self.node.presence
                try:
                    if presence is None:
                        raise PresenceUnavailable("presence is not wired")
                    data = await presence.answer(self.proto.memberships, output.users, output.rid)
                except PresenceUnavailable:
                    self.proto.presence_failed(output.rid)
                else:
                    self.proto.presence_answered(data)

    async def _authenticate(self, action: AuthAction) -> None:
        assert self.proto is not None
        result = await self.node.authenticate(action.token)
        if isinstance(result, Close):
            self.proto.auth_failed(result, result.name.lower())
            return
        claims, memberships = result
        self.token_version = claims.token_version
        first = False
        if not action.refresh:
            self.user_id = claims.user_id
            joined = self.node.attach(self)
            if joined is None:
                self.proto.auth_failed(Close.TOO_MANY_CONNECTIONS, "too many connections")
                return
            self.attached, first = True, joined
        self.proto.auth_succeeded(
            user_id=claims.user_id,
            expires_at=float(claims.expires_at),
            memberships=memberships,
            rid=action.rid,
            now=time.time(),
        )
        # Write `ready` before anything can await, so no delivery overtakes it; the route is
        # registered before the next frame (the client's sync) is read, so nothing is missed.
        for output in self.proto.take():
            if not self._emit(output):
                await self._perform(output)
        if first:
            await self.node.joined(self, self.proto.memberships)

    # -- results from the batch writer (Replier) ---------------------------------------------

    def send_finished(self, outcome: SendOutcome) -> None:
        if self.proto is not None:
            self.proto.send_finished(outcome)
            self._flush()

    def read_finished(self, outcome: ReadOutcome) -> None:
        if self.proto is not None:
            self.proto.read_finished(outcome)
            self._flush()

    def _flush(self) -> None:
        assert self.proto is not None
        for output in self.proto.take():
            if not self._emit(output):
                log.error(
                    "action outside the read loop dropped",
                    extra={"conn": self.session, "user": self.user_id},
                )

    # -- writing and closing -----------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Queue one encoded text frame for this tick's single write; never awaits."""
        if self.closing:
            return
        self._queued += len(data)
        if self.ws.transport.get_write_buffer_size() + self._queued > self.node.high_water:
            self.node.slow_consumer_closes += 1
            self._queue, self._queued = [], 0
            self.close(Close.SLOW_CONSUMER, "slow consumer")
            return
        queue = self._queue
        if not queue:
            self._loop.call_soon(self._write_queued)
        queue.append(text_frame(data))
        queue.append(data)

    def _write_queued(self) -> None:
        """Write what this tick queued: whole frames, in order, while the socket is OPEN."""
        queue, self._queue, self._queued = self._queue, [], 0
        if not queue or self.ws.protocol.state is not State.OPEN:
            return
        if not self._plain:
            for data in queue[1::2]:
                broadcast((self.ws,), data, text=True)
            return
        try:
            self.ws.transport.write(b"".join(queue))
        except Exception as exc:  # as broadcast: a failed write is the reader's problem
            log.warning(
                "write failed",
                extra={"conn": self.session, "user": self.user_id, "error": type(exc).__name__},
            )

    def close(self, code: int, reason: str) -> None:
        """Close from outside the read loop (slow consumer, shutdown, safety events)."""
        if self.proto is not None:
            self.proto.close(code, reason)
            self.proto.take()
        self._start_close(code, reason)

    def _start_close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        # Frames queued before the close (an error that explains it) go out before the close frame.
        self._write_queued()
        self.closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._closer = asyncio.create_task(self.ws.close(code, reason))

    # -- the timer ---------------------------------------------------------------------------

    def _reschedule(self) -> None:
        assert self.proto is not None
        deadline = None if self.closing else self.proto.next_deadline()
        if deadline == self._deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._deadline = deadline
        self._timer = None
        if deadline is not None:
            delay = max(0.0, deadline - time.time()) + 0.001
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        assert self.proto is not None
        self._timer, self._deadline = None, None
        self.proto.tick(time.time())
        self._flush()
        if not self.closing:
            self._reschedule()

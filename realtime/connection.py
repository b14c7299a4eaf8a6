"""The connection driver: the only code that awaits on behalf of one WebSocket.

Owns one socket's conversation with the protocol core: the transport hands it every complete
text message synchronously (:meth:`Connection.on_text`, no reader task and no future per frame);
it feeds the :class:`~realtime.protocol.Protocol`, writes the frames that produces, and performs
its actions through the :class:`~realtime.node.Node`. Sends and reads are queued to the batch
writer without awaiting (an answer known at once, such as a moderation reject or a full queue,
comes back as :meth:`Node.submit`'s value; the rest arrives after the commit as
:meth:`Connection.send_finished`); the actions that must await (auth, membership refresh,
sync, presence) run in one task per action, in order: while one runs, later messages wait in a
bounded backlog (reading pauses past :data:`BACKLOG_HIGH`) and are fed once it is done, so the
protocol sees them in the order they came. Its one timer (auth timeout, reauth notice, token
lapse) is a loop callback, not a task. Writes never await: a socket whose unsent bytes
(transport buffer plus this tick's queue) would pass the high-water mark is closed with
:data:`Close.SLOW_CONSUMER`.

What it needs of the transport is the :class:`Link` protocol (``realtime/transport.py`` frames,
coalesces and writes); it decides nothing about what a frame means (the protocol does). To the
node's parts it is a :class:`~realtime.sockets.LocalSocket`: safety events reach its state only
as inputs it hands to the protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import typing
from collections import deque
from collections.abc import Coroutine
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request

from common.codes import Close, Err
from realtime.domain import Memberships, ReadOutcome, SendOutcome
from realtime.node import Node
from realtime.presencebackend import PresenceUnavailable
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

#: Messages held while an action is awaited: reading pauses above the first, resumes below the
#: second (as the library's own receive queue did, 16 and 4).
BACKLOG_HIGH = 16
BACKLOG_LOW = 4


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


class Link(typing.Protocol):
    """What a connection needs of its transport (:class:`realtime.transport.WsSocket`)."""

    @property
    def request(self) -> Request | None: ...

    @property
    def close_code(self) -> int | None: ...

    def pending(self) -> int:
        """Bytes queued or buffered and not yet on the wire."""

    def send_text(self, data: bytes) -> None:
        """Queue one encoded text frame for this tick's single write."""

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake (frames queued before it go first)."""

    def drop_queued(self) -> None:
        """Forget what this tick queued (a slow consumer's close goes out next)."""

    def set_send_buffer(self, size: int) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class Connection:
    """One authenticated (or authenticating) socket."""

    def __init__(self, link: Link, node: Node) -> None:
        self.link, self.node = link, node
        self.session = node.new_session()
        self.user_id = 0
        self.closing = False
        self.attached = False
        self.proto: Protocol | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None
        #: The task performing awaited actions (None when idle) and the messages that wait for it.
        self._actions: asyncio.Task[None] | None = None
        self._backlog: deque[str | None] = deque()
        self._paused = False

    # -- frames in ---------------------------------------------------------------------------

    def start(self) -> None:
        """The handshake is done: refuse a token in the URL, else start the protocol."""
        request = self.link.request
        assert request is not None
        if token_in_query(request.path):
            self._start_close(Close.TOKEN_IN_QUERY, "token in query string")
            return
        if self.node.sndbuf:
            # A bounded kernel buffer makes the high-water mark mean what it says.
            self.link.set_send_buffer(self.node.sndbuf)
        self.proto = Protocol(
            self.node.config,
            session=self.session,
            now=time.time(),
            header_token=bearer_token(request.headers),
        )
        self._drain()

    def on_text(self, data: str) -> None:
        self._receive(data)

    def on_binary(self) -> None:
        self._receive(None)

    def _receive(self, data: str | None) -> None:
        if self.closing or self.proto is None:
            return
        if self._actions is not None:
            self._backlog.append(data)
            if len(self._backlog) >= BACKLOG_HIGH and not self._paused:
                self._paused = True
                self.link.pause_reading()
            return
        try:
            self._feed(data)
            self._drain()
        except Exception:
            log.exception("connection failed", extra={"conn": self.session, "user": self.user_id})
            self.close(Close.INTERNAL, "internal error")

    def _feed(self, data: str | None) -> None:
        assert self.proto is not None
        if data is None:
            self.proto.receive_binary(time.time())
        else:
            self.proto.receive_text(data, time.time())

    def _drain(self) -> None:
        """Emit what the protocol produced; the first output that awaits starts the action task."""
        assert self.proto is not None
        outputs = self.proto.take()
        for i, output in enumerate(outputs):
            if not self._emit(output):
                self._actions = asyncio.create_task(self._run_actions(outputs[i:]))
                return
        self._reschedule()

    async def _run_actions(self, outputs: list[Output]) -> None:
        """Perform ``outputs`` in order, then what they and the backlog produce, until idle."""
        proto = self.proto
        assert proto is not None
        try:
            while True:
                for output in outputs:
                    if not self._emit(output):
                        await self._perform(output)
                outputs = proto.take()
                while not outputs and self._backlog and not self.closing:
                    self._feed(self._backlog.popleft())
                    outputs = proto.take()
                if not outputs:
                    break
        except Exception:
            log.exception("connection failed", extra={"conn": self.session, "user": self.user_id})
            self.close(Close.INTERNAL, "internal error")
        finally:
            self._actions = None
            if self._paused and not self.closing:
                self._paused = False
                self.link.resume_reading()
        self._reschedule()

    def on_closed(self) -> Coroutine[Any, Any, None]:
        """The TCP connection is gone: stop the timer; detach once any action has finished."""
        self.closing = True
        self._backlog.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return self._closed()

    async def _closed(self) -> None:
        if self._actions is not None:
            with contextlib.suppress(Exception):
                await self._actions
        if self.attached:
            self.attached = False
            await self.node.detach(self)
        if self.user_id:
            log.info(
                "socket closed",
                extra={"conn": self.session, "user": self.user_id, "code": self.link.close_code},
            )

    def _emit(self, output: Output) -> bool:
        """Handle outputs that need no awaiting; False for the ones :meth:`_perform` awaits."""
        match output:
            case Out():
                self.write(output.data)
            case CloseOut():
                self._start_close(output.code, output.reason)
            case PersistSend() | PersistRead():
                answered = self.node.submit(output.request, self)
                if isinstance(answered, SendOutcome):
                    self.send_finished(answered)
                elif answered is not None:
                    self.read_finished(answered)
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
            token_version=claims.token_version,
        )
        # Write `ready` before anything can await, so no delivery overtakes it; the route is
        # registered before the next frame (the client's sync) is read, so nothing is missed.
        for output in self.proto.take():
            if not self._emit(output):
                await self._perform(output)
        if first:
            await self.node.joined(self, self.proto.memberships)

    # -- safety events (realtime/sockets.py: LocalSocket) -----------------------------------

    @property
    def memberships(self) -> Memberships | None:
        return None if self.proto is None else self.proto.memberships

    def conversation_closed(self, cid: int) -> None:
        if self.proto is not None:
            self.proto.conversation_closed(cid)

    def peer_blocked(self, peer: int) -> tuple[int, ...]:
        return () if self.proto is None else self.proto.peer_blocked(peer)

    def conversation_opened(self, cid: int, peer: int) -> None:
        if self.proto is not None:
            self.proto.conversation_opened(cid, peer)

    def token_revoked(self, code: int, reason: str, *, below: int | None = None) -> None:
        if self.proto is None:
            self._start_close(code, reason)
        elif (closing := self.proto.token_revoked(code, reason, below=below)) is not None:
            self.proto.take()  # as in close(): nothing still queued is performed
            self._start_close(closing.code, closing.reason)

    def memberships_reloaded(self, memberships: Memberships) -> None:
        if self.proto is not None:
            self.proto.set_memberships(memberships)

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
        link = self.link
        if link.pending() + len(data) > self.node.high_water:
            self.node.slow_consumer_closes += 1
            link.drop_queued()  # it is behind already: the close frame goes next
            self.close(Close.SLOW_CONSUMER, "slow consumer")
            return
        link.send_text(data)

    def close(self, code: int, reason: str) -> None:
        """Close from outside the protocol (slow consumer, shutdown, safety events)."""
        if self.proto is not None:
            self.proto.close(code, reason)
            self.proto.take()
        self._start_close(code, reason)

    def _start_close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self._backlog.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        # Frames queued before the close (an error that explains it) go out before the close frame.
        self.link.close(code, reason)

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

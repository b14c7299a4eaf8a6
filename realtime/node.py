"""The node's services as one connection sees them: authenticate, attach, persist, deliver, sync.

Owns the glue between a connection and the node's parts: it verifies tokens (``common.tokens``
with public keys only, the token version from Redis, else PostgreSQL, then cached), turns
committed batch outcomes into acks and ``msg``/``read`` frames (encoded once, written to local
sockets directly and handed to the broker for other nodes), hands new messages with recipients
not connected here, and committed receipts, to the offline notifications (``notices``), and
relays typing. It never awaits
on a socket (that is :mod:`realtime.connection`) and never touches a redis or asyncpg exception
type (the broker and store translate them).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from common import wire
from common.codes import Close
from common.tokens import Claims, KeySet, TokenError, verify_token
from realtime import failpoints
from realtime.batch import BatchWriter, Outcome
from realtime.broker import Broker, BrokerUnavailable, Watch
from realtime.domain import (
    Memberships,
    ReadOutcome,
    ReadRequest,
    Replier,
    SendOutcome,
    SendRequest,
    StoredMessage,
    UserState,
)
from realtime.hub import Hub, Socket
from realtime.metrics import TALLY
from realtime.notices import MessageNotices
from realtime.presence import FRAME_PREFIX as PRESENCE_PREFIX
from realtime.presence import Presence
from realtime.protocol import Config, TypingAction
from realtime.store import Store, StoreUnavailable

log = logging.getLogger("realtime.node")

#: Token errors that mean "get a fresh token"; every other one is terminal.
_TOKEN_CLOSE = {"expired": Close.TOKEN_EXPIRED, "revoked": Close.REVOKED}


class Closable(Socket, Replier, Protocol):
    """A connection as the node tracks it."""

    def close(self, code: int, reason: str) -> None: ...


class Node:
    def __init__(
        self,
        *,
        config: Config,
        keys: KeySet,
        audience: str,
        issuer: str,
        hub: Hub,
        broker: Broker,
        store: Store,
        writer: BatchWriter,
        high_water: int,
        sndbuf: int = 0,
    ) -> None:
        self.config, self.keys, self.audience, self.issuer = config, keys, audience, issuer
        self.hub, self.broker, self.store, self.writer = hub, broker, store, writer
        self.high_water, self.sndbuf = high_water, sndbuf
        self.connections: set[Closable] = set()
        self._sessions = itertools.count(1)
        self.slow_consumer_closes = 0
        # Hooks of realtime/safety.py and realtime/moderation.py (None: not wired, as in tests).
        #: ``(user, token version, users row or None)`` at authentication -> a close code if a
        #: safety event already revoked it (also where the moderation gate reads trust).
        self.admission: Callable[[int, int, UserState | None], Close | None] | None = None
        #: Takes a send before the batch writer (moderation, daily cap); False: not taken.
        self.send_gate: Callable[[SendRequest, Replier], bool] | None = None
        #: Bumped by each membership-changing safety event; a cache loaded across one reloads.
        self.membership_epoch = 0
        #: realtime/presence.py (None: not wired, as in tests).
        self.presence: Presence | None = None
        #: realtime/notices.py: offline-message notifications (None: not wired).
        self.notices: MessageNotices | None = None

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def new_session(self) -> str:
        return f"{self.node_id}.{next(self._sessions)}"

    # -- authentication ----------------------------------------------------------------------

    async def authenticate(self, token: str) -> tuple[Claims, Memberships | None] | Close:
        """Claims and the membership cache (None if PostgreSQL is down), or a close code."""
        try:
            claims = verify_token(token, self.keys, audience=self.audience, issuer=self.issuer)
        except TokenError as exc:
            return _TOKEN_CLOSE.get(exc.code, Close.BAD_TOKEN)
        user = claims.user_id
        redis_up = True
        try:
            version = await self.broker.token_version(user)
        except BrokerUnavailable:
            version, redis_up = None, False
        try:
            state, memberships = await self._account(user)
            db_up = True
        except StoreUnavailable:
            state, memberships, db_up = None, None, False
        if db_up and (state is None or state.disabled):
            return Close.ACCOUNT_DISABLED
        if state is not None:
            # PostgreSQL is the truth; the Redis copy is only the fallback while it is down (a
            # copy left stale by a failed announcement must not lock the user out).
            if redis_up and version != state.token_version:
                await self.broker.cache_token_version(user, state.token_version)
            version = state.token_version
        elif version is None:
            return Close.UNAVAILABLE
        if claims.token_version != version:
            return Close.REVOKED
        # No await from here to the caller's attach: an event applied meanwhile is seen here.
        if self.admission is not None and (refused := self.admission(user, version, state)):
            return refused
        return claims, memberships

    async def memberships(self, user: int) -> Memberships | None:
        """The user's memberships, or None while PostgreSQL is down."""
        try:
            return (await self._account(user))[1]
        except StoreUnavailable:
            return None

    async def _account(self, user: int) -> tuple[UserState | None, Memberships]:
        """One read of the user's row and memberships, read again (up to three times in all)
        if a block/unmatch/match was applied while it was in flight."""
        for _attempt in range(3):
            epoch = self.membership_epoch
            account = await self.store.account(user)
            if epoch == self.membership_epoch:
                break
        return account

    # -- connections -------------------------------------------------------------------------

    def attach(self, conn: Closable) -> bool | None:
        """Index an authenticated socket (see :meth:`Hub.add`)."""
        first = self.hub.add(conn)
        if first is not None:
            self.connections.add(conn)
        return first

    async def joined(self, conn: Closable, memberships: Memberships | None) -> None:
        """The user's first socket here is ready: announce the route, then presence."""
        await self.broker.add_route(conn.user_id)
        if self.presence is not None:
            await self.presence.joined(conn.user_id, memberships)

    async def detach(self, conn: Closable) -> None:
        self.connections.discard(conn)
        if self.hub.remove(conn):
            if self.presence is not None:  # the grace starts before the route goes
                await self.presence.left(conn.user_id, self.presence.view(conn))
            await self.broker.remove_route(conn.user_id)

    def close_all(self, code: int, reason: str) -> None:
        for conn in tuple(self.connections):
            conn.close(code, reason)

    # -- the write path ----------------------------------------------------------------------

    def submit(self, request: SendRequest | ReadRequest, reply: Replier) -> None:
        gate = self.send_gate
        if gate is not None and isinstance(request, SendRequest) and gate(request, reply):
            return  # answered (rejected, capped) or queued behind the daily counter
        self.writer.submit(request, reply)

    def on_outcomes(self, outcomes: list[Outcome]) -> None:
        """After a commit: fan out what was stored, then ack or refuse each request."""
        for outcome in outcomes:
            if isinstance(outcome, SendOutcome):
                # Fan out first: an ack then means the live delivery was already on its way.
                if outcome.stored is not None:
                    self._fan_out_message(outcome)
                failpoints.hit("after_fanout_before_ack")
                outcome.reply.send_finished(outcome)
            else:
                outcome.reply.read_finished(outcome)
                if outcome.error is None:
                    self._fan_out_read(outcome)
                    if self.notices is not None:
                        request = outcome.request
                        self.notices.read(request.user, request.cid, outcome.seq)

    def _fan_out_message(self, outcome: SendOutcome) -> None:
        # A resend is delivered again too: delivery is at-least-once and clients dedupe by
        # (cid, seq), and it repairs a fan-out lost to a crash between commit and publish.
        request, stored = outcome.request, outcome.stored
        assert stored is not None
        frame = wire.Msg(
            cid=request.cid,
            seq=stored.seq,
            id=stored.id,
            sender=request.sender,
            cmid=request.cmid,
            body=request.body,
            kind=request.kind,
            time=stored.time_ms,
        )
        users = (request.sender, *request.peers)
        scope = (request.cid, request.sender)
        watch = None
        if self.notices is not None and not stored.dup:  # a resend was counted the first time
            watch = self.notices.check(request.cid, stored.seq, request.sender, request.peers)
        self.deliver(users, wire.encode(frame), exclude=outcome.reply, scope=scope, watch=watch)

    def _fan_out_read(self, outcome: ReadOutcome) -> None:
        request = outcome.request
        frame = wire.ReadReceipt(cid=request.cid, user=request.user, seq=outcome.seq)
        self.deliver(request.peers, wire.encode(frame), scope=(request.cid, request.user))

    def typing(self, action: TypingAction) -> None:
        self.deliver(action.peers, action.data)

    def deliver(
        self,
        users: Sequence[int],
        data: bytes,
        exclude: object = None,
        scope: tuple[int, int] | None = None,
        watch: Watch | None = None,
    ) -> None:
        """Local sockets now, other nodes through the broker (same bytes everywhere).

        ``scope`` is the frame's ``(cid, author)`` (read from ``data`` when not given): each
        recipient socket is checked against its block/membership cache just before the write.
        ``watch`` goes with the delivery to the broker (see :class:`realtime.broker.Watch`).
        """
        n = self.hub.deliver(users, data, exclude=exclude, scope=scope or wire.scope_of(data))
        TALLY.out_bytes(data, n)
        self.broker.publish(users, data, watch)

    def on_remote(self, users: Sequence[int], data: bytes) -> None:
        """An entry of this node's delivery stream (filtered here too: it may be in flight)."""
        if self.presence is not None and data.startswith(PRESENCE_PREFIX):
            # Presence is shown per recipient socket (shared conversation, no block).
            self.presence.deliver_local(users, data)
            return
        TALLY.out_bytes(data, self.hub.deliver(users, data, scope=wire.scope_of(data)))

    async def sync(
        self, user: int, positions: dict[int, int], limit: int
    ) -> tuple[list[StoredMessage], bool] | None:
        try:
            return await self.store.sync_page(user, positions, limit)
        except StoreUnavailable:
            return None

    def local_users(self) -> Iterable[int]:
        return self.hub.users()

    def stats(self) -> tuple[int, int]:
        return self.hub.socket_count, self.hub.user_count

    @staticmethod
    def now() -> float:
        return time.time()

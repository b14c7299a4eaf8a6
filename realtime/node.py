"""The node's services as one connection sees them: authenticate, attach, submit, sync, typing.

Owns the glue between a connection and the node's parts: it verifies tokens (``common.tokens``
with public keys only, the token version from Redis, else PostgreSQL, then cached; a safety
event applied meanwhile refuses it, :class:`~realtime.safetystate.SafetyState`), indexes
sockets in the hub and announces the route and presence of a user's first one, submits sends
(through the moderation gate) and read receipts to the batch writer, answers sync pages and
relays typing. What happens after a commit (acks, fan-out, notifications) is
:mod:`realtime.aftercommit`'s. It never awaits on a socket (that is
:mod:`realtime.connection`) and never touches a redis or asyncpg exception type (the broker and
store translate them).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Protocol

from common.codes import Close, Err
from common.tokens import Claims, KeySet, TokenError, verify_token
from realtime.aftercommit import AfterCommit
from realtime.batch import BatchWriter, Outcome
from realtime.broker import Broker, BrokerUnavailable
from realtime.domain import (
    Memberships,
    ReadRequest,
    Replier,
    SendOutcome,
    SendRequest,
    StoredMessage,
    UserState,
)
from realtime.fanout import Fanout
from realtime.hub import Hub
from realtime.presence import Presence
from realtime.protocol import Config, TypingAction
from realtime.safetystate import SafetyState
from realtime.sockets import LocalSocket
from realtime.store import Store, StoreUnavailable

#: The moderation gate's answer for one send: an error to refuse it with now, True when it took
#: the send (queued behind the daily counter), False when it goes to the writer.
SendGate = Callable[[SendRequest, Replier], Err | bool]

log = logging.getLogger("realtime.node")

#: Token errors that mean "get a fresh token"; every other one is terminal.
_TOKEN_CLOSE = {"expired": Close.TOKEN_EXPIRED, "revoked": Close.REVOKED}


class Closable(LocalSocket, Replier, Protocol):
    """A connection as the node tracks it."""


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
        after_commit: AfterCommit,
        fanout: Fanout,
        presence: Presence,
        safety: SafetyState,
        send_gate: SendGate,
        on_account: Callable[[int, UserState | None], None],
        high_water: int,
        sndbuf: int = 0,
    ) -> None:
        """``on_account``: the users row read at authentication (None while PostgreSQL is
        down), where the moderation gate reads trust."""
        self.config, self.keys, self.audience, self.issuer = config, keys, audience, issuer
        self.hub, self.broker, self.store, self.writer = hub, broker, store, writer
        self.after_commit, self.fanout, self.presence = after_commit, fanout, presence
        self.safety, self.send_gate, self.on_account = safety, send_gate, on_account
        self.high_water, self.sndbuf = high_water, sndbuf
        self.connections: set[Closable] = set()
        self._sessions = itertools.count(1)
        self.slow_consumer_closes = 0

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
        self.on_account(user, state)
        if refused := self.safety.admission(user, version):
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
            epoch = self.safety.membership_epoch
            account = await self.store.account(user)
            if epoch == self.safety.membership_epoch:
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
        await self.presence.joined(conn.user_id, memberships)

    async def detach(self, conn: Closable) -> None:
        self.connections.discard(conn)
        if self.hub.remove(conn):
            # The grace starts before the route goes.
            await self.presence.left(conn.user_id, self.presence.view(conn))
            await self.broker.remove_route(conn.user_id)

    def close_all(self, code: int, reason: str) -> None:
        for conn in tuple(self.connections):
            conn.close(code, reason)

    # -- the write path ----------------------------------------------------------------------

    def submit(self, request: SendRequest | ReadRequest, reply: Replier) -> Outcome | None:
        """Queue ``request`` (a send through the moderation gate first) without awaiting.

        An answer known at once (content rejected, the cap queue or the writer's queue full) is
        returned, never called back; otherwise ``reply`` hears after the commit
        (:class:`~realtime.aftercommit.AfterCommit`).
        """
        if isinstance(request, SendRequest):
            taken = self.send_gate(request, reply)
            if taken is True:
                return None  # queued behind the daily counter; answered from there
            if taken is not False:
                return SendOutcome(request, reply, error=taken)
        return self.after_commit.submit(self.writer.submit, request, reply)

    def typing(self, action: TypingAction) -> None:
        self.fanout.deliver(action.peers, action.data)

    async def sync(
        self, user: int, positions: dict[int, int], limit: int
    ) -> tuple[list[StoredMessage], bool] | None:
        try:
            return await self.store.sync_page(user, positions, limit)
        except StoreUnavailable:
            return None

"""The safety events consumer: every node applies the API's safety stream to its own sockets.

Owns reading the safety feed (:class:`~realtime.safetyfeed.SafetyFeed`: the Redis stream
:data:`common.rediskeys.SAFETY_STREAM`, or its in-memory twin), from the last id read, and
applying each event at once, synchronously, to this node's sockets and
caches:

- ``Block`` / ``Unmatch``: the pair's conversations leave both users' membership caches and the
  pair (or the conversation) is remembered node-wide
  (:class:`~realtime.safetystate.SafetyState`), so :meth:`SafetyState.admits`, asked by
  the hub before every scoped write (``msg``, ``typing``, ``read``, ``deleted``, ``presence``),
  stops items already in flight too; the protocol then refuses frames with ``not_member`` /
  ``blocked``. ``Unblock`` reloads both users' caches from PostgreSQL (a block the other way
  may remain; the ended conversation stays closed).
- ``Match``: the conversation joins both users' caches and a ``match`` frame goes to their
  sockets (no reconnect needed).
- ``Ban`` / ``TokenBump``: the user's sockets close with ``ACCOUNT_DISABLED`` / ``REVOKED``
  (only sockets whose token is older than the bump) and the node remembers the floor, so an
  authentication racing the event is refused too (:meth:`SafetyState.admission`).
- ``MessageDeleted`` / ``ReadUpTo`` (REST deletes and reads) become ``deleted`` / ``read``
  frames; ``Notify`` a ``notification`` frame; ``ModerationChanged`` reloads the filter.

Where a node starts reading: caches are loaded from PostgreSQL when a socket authenticates, and
the API publishes an event only after its transaction commits, so any event a cache can miss
was published after that load. :meth:`SafetyConsumer.prime` resolves the stream's current last
id ("$" made concrete) before the server accepts its first socket; everything later is read.
After a lost Redis connection the reader reconnects with backoff and resumes from its last id;
because the API drops events it cannot publish while Redis is down (and a wiped Redis loses the
stream), the first successful read after a failure also re-checks every local socket against
PostgreSQL (memberships, blocks, token version, account state) and reloads the filter.

A socket's state changes only through the socket-state seam (:mod:`realtime.sockets`): each
event becomes an input of the sockets the hub holds for its users (``conversation_closed``,
``peer_blocked``, ``conversation_opened``, ``token_revoked``, ``memberships_reloaded``), which the
connection hands to its protocol.

It must not await on a socket, know the connection type or edit a socket's cache, nor touch
asyncpg (the node's store does); the feed's failures arrive as ``FeedUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from common import events, wire
from common.codes import Close
from common.tasks import cancel_and_wait
from realtime.domain import Memberships
from realtime.node import Node
from realtime.safetyfeed import FeedUnavailable, SafetyFeed
from realtime.safetystate import SafetyState, remember
from realtime.store import StoreUnavailable

log = logging.getLogger("realtime.safety")


class SafetyConsumer:
    """Reads the safety stream and applies each event to this node (see module docstring)."""

    def __init__(
        self,
        node: Node,
        feed: SafetyFeed,
        *,
        state: SafetyState,
        reload_moderation: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.node, self.feed = node, feed
        #: Shared with the node (admission, membership epoch) and the hub (its gate).
        self.state = state
        self.reload_moderation = reload_moderation
        self.last_id = f"{int(time.time() * 1000)}-0"
        self.applied = 0
        self.failures = 0
        self._task: asyncio.Task[None] | None = None
        self._side: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def prime(self) -> None:
        """Start from the stream's current end; call before the server accepts sockets.

        When Redis cannot say, the current time is used (stream ids are milliseconds).
        """
        try:
            self.last_id = await self.feed.newest()
        except FeedUnavailable as exc:
            log.warning("safety stream not primed", extra={"error": str(exc)})

    def start(self) -> None:
        self._task = asyncio.create_task(self._read_loop(), name="safety-reader")

    async def close(self) -> None:
        await cancel_and_wait(self._task, *self._side)
        self._task, self._side = None, set()
        await self.feed.close()

    def _spawn(self, work: Awaitable[Any], name: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("safety side task failed", extra={"task": name})

        task = asyncio.create_task(run(), name=name)
        self._side.add(task)
        task.add_done_callback(self._side.discard)

    # -- reading -----------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        backoff, failed = 0.05, False
        while True:
            try:
                entries = await self.feed.read(self.last_id, count=500)
            except FeedUnavailable as exc:
                self.failures += 1
                failed = True
                log.warning("safety stream read failed", extra={"error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            backoff = 0.05
            if failed:
                failed = False
                self._spawn(self.recheck(), "safety-recheck")
            for entry_id, data in entries:
                self.last_id = entry_id
                try:
                    event = events.decode_event(data)
                except msgspec.MsgspecError:
                    log.error("bad safety event", extra={"id": entry_id})
                    continue
                try:
                    self.apply(event)
                except Exception:
                    log.exception("safety event failed", extra={"id": entry_id})
                self.applied += 1

    # -- applying ----------------------------------------------------------------------------

    def apply(self, event: events.SafetyEvent) -> None:
        """Apply one event to this node's sockets and caches; never awaits."""
        match event:
            case events.Block(blocker=a, blocked=b):
                self._block(a, b)
            case events.Unblock(blocker=a, blocked=b):
                self.state.blocks.pop((a, b), None)
                self.state.membership_epoch += 1
                self._spawn(self.reload_memberships((a, b)), "safety-unblock")
            case events.Unmatch(users=(a, b), cid=cid):
                self._close_conversation(cid, (a, b))
            case events.Match(users=(a, b), cid=cid):
                self._match(cid, a, b)
            case events.Ban(user=user, until=until):
                end = float("inf") if until is None else until
                if end > time.time():
                    remember(self.state.banned, user, end)
                    self._close_user(user, Close.ACCOUNT_DISABLED, "account disabled")
            case events.TokenBump(user=user, version=version):
                if version > self.state.token_floor.get(user, 0):
                    remember(self.state.token_floor, user, version)
                self._close_user(user, Close.REVOKED, "token revoked", below=version)
            case events.ModerationChanged():
                if self.reload_moderation is not None:
                    self._spawn(self.reload_moderation(), "moderation-reload")
            case events.Notify(user=user, id=nid, kind=kind, payload=payload):
                frame = wire.NotificationPush(id=nid, kind=kind, payload=payload)
                self.node.hub.deliver((user,), wire.encode(frame))
            case events.MessageDeleted(cid=cid, seq=seq, users=users):
                data = wire.encode(wire.Deleted(cid=cid, seq=seq))
                self.node.hub.deliver(users, data, scope=(cid, 0))
            case events.ReadUpTo(cid=cid, user=user, seq=seq):
                data = wire.encode(wire.ReadReceipt(cid=cid, user=user, seq=seq))
                self.node.hub.deliver(self._members_here(cid, user), data, scope=(cid, user))

    def _block(self, blocker: int, blocked: int) -> None:
        remember(self.state.blocks, (blocker, blocked))
        self.state.membership_epoch += 1
        hub = self.node.hub
        for user, other in ((blocker, blocked), (blocked, blocker)):
            for sock in hub.sockets_of(user):
                for cid in sock.peer_blocked(other):
                    remember(self.state.closed, cid)

    def _close_conversation(self, cid: int, users: tuple[int, ...]) -> None:
        remember(self.state.closed, cid)
        self.state.membership_epoch += 1
        for user in users:
            for sock in self.node.hub.sockets_of(user):
                sock.conversation_closed(cid)

    def _match(self, cid: int, a: int, b: int) -> None:
        self.state.membership_epoch += 1
        hub = self.node.hub
        for user, other in ((a, b), (b, a)):
            data = wire.encode(wire.MatchNotice(cid=cid, user=other))
            for sock in hub.sockets_of(user):
                sock.conversation_opened(cid, other)
            hub.deliver((user,), data, scope=(cid, other))

    def _close_user(self, user: int, code: Close, reason: str, below: int | None = None) -> None:
        for sock in self.node.hub.sockets_of(user):
            sock.token_revoked(code, reason, below=below)

    def _members_here(self, cid: int, reader: int) -> list[int]:
        """Users with a socket here whose cache holds ``cid``, other than ``reader``."""
        hub = self.node.hub
        users = {
            user
            for user in hub.users()
            if user != reader
            and any(
                (m := sock.memberships) is not None and cid in m.peers
                for sock in hub.sockets_of(user)
            )
        }
        return sorted(users)

    # -- re-reading PostgreSQL ---------------------------------------------------------------

    async def reload_memberships(self, users: tuple[int, ...]) -> None:
        """Replace the caches of ``users``' local sockets with PostgreSQL's view."""
        for user in users:
            if not self.node.hub.has(user):
                continue
            fresh = await self.node.memberships(user)
            if fresh is None:
                continue
            for sock in self.node.hub.sockets_of(user):
                # Each socket gets its own copy: its protocol edits its cache in place.
                sock.memberships_reloaded(
                    Memberships(dict(fresh.peers), fresh.blocked, fresh.loaded_at)
                )

    async def recheck(self) -> None:
        """After a stream outage: events may be lost, so ask PostgreSQL about every socket."""
        if self.reload_moderation is not None:
            await self.reload_moderation()
        for user in tuple(self.node.hub.users()):
            try:
                state = await self.node.store.user_state(user)
            except StoreUnavailable:
                return  # the next outage's recheck will try again
            if state is None or state.disabled:
                self._close_user(user, Close.ACCOUNT_DISABLED, "account disabled")
                continue
            self._close_user(user, Close.REVOKED, "token revoked", below=state.token_version)
            await self.reload_memberships((user,))

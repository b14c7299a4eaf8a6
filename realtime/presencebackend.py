"""What presence keeps outside the node: the seam (:class:`PresenceBackend`) and its Redis
implementation. The in-memory twin is :class:`realtime.memory.MemoryPresence`; one contract
suite (``tests/realtime/test_seams.py``) runs against both.

The keys (all built in :mod:`common.rediskeys`, one user's in one hash slot):
``routes`` (the broker's, read here), ``shown`` (peers were told "online": set NX by the
first socket anywhere), ``grace`` (the last socket closed a moment ago), ``seen`` (last seen,
to the minute), and per node the users it hosts or holds in grace. The registry
(``mm:{nodes}`` and each node's lease) tells dead nodes apart.

None of them is refreshed per user: routes and ``shown`` carry no expiry and live as long as
their node's lease (:mod:`realtime.leases`), which the broker renews once per heartbeat. A query
counts a route only on a node the lease view says is alive; the offline script counts every
route left, since a dead node's routes are removed by its reaper *before* the reaper settles
that node's users. The per-node user set carries no expiry either: it is the only index a
reaper has to a dead node's routes, so it must last as long as they do.

Exceptions: every Redis failure becomes :class:`PresenceUnavailable`; nothing above this module
sees a redis type. It must not decide who is told what (:mod:`realtime.presence` does).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Final, Protocol, TypeVar

from common.redisclient import AnyPipeline as Pipeline
from common.redisclient import RedisClient
from common.redisedge import REDIS_FAILURES, LuaScript, eval_scripts
from common.rediskeys import (
    NODES,
    as_text,
    delivery_stream,
    grace_key,
    node_key,
    node_users_key,
    route_key,
    seen_key,
    shown_key,
)
from realtime.leases import LiveNodes

SEEN_TTL_S: Final = 90 * 24 * 3600
#: Answers of :meth:`PresenceBackend.settle` besides a last-seen time.
STILL_ONLINE: Final = -1
ANNOUNCED_ELSEWHERE: Final = -2

# KEYS: routes, shown, seen, grace. ARGV: last seen (ms), seen ttl (ms).
# -1: a route is left (still online, or on a dead node its reaper will settle); -2: someone
# else announced it; else: last seen.
OFFLINE_LUA: Final = """
if redis.call('ZCARD', KEYS[1]) > 0 then return -1 end
redis.call('DEL', KEYS[4])
if redis.call('DEL', KEYS[2]) == 0 then return -2 end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
return tonumber(ARGV[1])
"""
OFFLINE: Final = LuaScript(OFFLINE_LUA)

T = TypeVar("T")


class PresenceUnavailable(Exception):
    """The presence backend could not answer."""


def minute_ms(now: float) -> int:
    """``now`` (epoch s) rounded down to the minute, in ms: last-seen is coarse on purpose."""
    return int(now // 60) * 60_000


def offline_keys(user_id: int) -> list[str]:
    """The keys :data:`OFFLINE_LUA` takes, in its order (one user's: one hash slot)."""
    return [route_key(user_id), shown_key(user_id), seen_key(user_id), grace_key(user_id)]


class PresenceBackend(Protocol):
    """One node's view of the presence state all nodes share. Every method raises
    :class:`PresenceUnavailable` when the backend cannot answer."""

    async def joined(self, user: int) -> bool:
        """``user``'s first socket on this node: True if no node had shown them online."""

    async def hold_grace(self, user: int, seconds: float) -> None:
        """``user`` still counts as online for ``seconds`` (their last socket here closed)."""

    async def states(self, users: Sequence[int], now: float) -> list[tuple[bool, int]]:
        """Per user: online (a live route or the grace), and the last-seen minute (ms)."""

    async def settle(self, users: Sequence[int], now: float) -> dict[int, int]:
        """Per user whose grace ran out: the last seen this call recorded (the caller
        announces offline), or :data:`STILL_ONLINE` / :data:`ANNOUNCED_ELSEWHERE`."""

    async def release(self, users: Collection[int]) -> None:
        """This node holds ``users`` no more."""

    async def rejoin(self, held: Collection[int], hosted: Collection[int]) -> list[int]:
        """This node's lease had lapsed (it may have been reaped): list ``held`` again and show
        ``hosted`` online again; the users of ``hosted`` this call showed (to announce)."""

    async def claim_dead_nodes(self, now: float) -> list[str]:
        """Nodes whose heartbeat lapsed, each claimed by exactly one caller (at most 20)."""

    async def reap(self, node: str) -> list[int]:
        """Remove a claimed dead node's routes, stream and lists; the users it held."""

    async def forget(self) -> None:
        """This node is leaving: drop its list of users."""


class RedisPresence:
    """:class:`PresenceBackend` on Redis (see the module docstring)."""

    def __init__(
        self,
        redis: RedisClient,
        *,
        node_id: str,
        ttl_s: float,
        timeout_s: float,
        live: LiveNodes | None = None,
    ) -> None:
        self.redis, self.node_id, self.ttl_s, self.timeout_s = redis, node_id, ttl_s, timeout_s
        self._held = node_users_key(node_id)
        # The broker's view (refreshed by its heartbeat) when shared; else refreshed here.
        self.live = live or LiveNodes(node_id, stale_after_s=ttl_s / 2)

    async def _call(self, work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, self.timeout_s)
        except REDIS_FAILURES as exc:
            raise PresenceUnavailable(type(exc).__name__) from exc

    async def _pipeline(self, fill: Callable[[Pipeline], object]) -> list[Any]:
        """One non-transactional pipeline: ``fill`` queues its commands."""

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                fill(pipe)
                replies: list[Any] = await pipe.execute()
                return replies

        return await self._call(run())

    async def joined(self, user: int) -> bool:
        def fill(pipe: Pipeline) -> None:
            pipe.set(shown_key(user), b"1", nx=True)
            pipe.sadd(self._held, user)

        first, *_ = await self._pipeline(fill)
        return bool(first)

    async def hold_grace(self, user: int, seconds: float) -> None:
        await self._call(self.redis.set(grace_key(user), b"1", px=int(seconds * 1000)))

    async def states(self, users: Sequence[int], now: float) -> list[tuple[bool, int]]:
        if self.live.age(now) > self.live.stale_after_s:  # no heartbeat refreshed it lately
            await self._call(self.live.refresh(self.redis))

        def fill(pipe: Pipeline) -> None:
            for user in users:
                pipe.zrange(route_key(user), 0, -1, withscores=True)
                pipe.exists(grace_key(user))
                pipe.get(seen_key(user))

        replies = await self._pipeline(fill)
        live = self.live
        return [
            (
                live.any_alive(((as_text(n), float(w)) for n, w in replies[i]), now)
                or bool(replies[i + 1]),
                int(replies[i + 2] or 0),
            )
            for i in range(0, len(replies), 3)
        ]

    async def settle(self, users: Sequence[int], now: float) -> dict[int, int]:
        args = (minute_ms(now), SEEN_TTL_S * 1000)
        calls = [(OFFLINE, offline_keys(user), args) for user in users]
        replies = await self._call(eval_scripts(self.redis, calls))
        return {user: int(r) for user, r in zip(users, replies, strict=True)}

    async def release(self, users: Collection[int]) -> None:
        await self._call(self.redis.srem(self._held, *users))

    async def rejoin(self, held: Collection[int], hosted: Collection[int]) -> list[int]:
        order = list(hosted)

        def fill(pipe: Pipeline) -> None:
            if held:
                pipe.sadd(self._held, *held)
            for user in order:
                pipe.set(shown_key(user), b"1", nx=True)

        replies = await self._pipeline(fill)
        shown = replies[1:] if held else replies
        return [user for user, first in zip(order, shown, strict=True) if first]

    async def claim_dead_nodes(self, now: float) -> list[str]:
        dead = await self._call(self.redis.zrangebyscore(NODES, "-inf", f"({now - self.ttl_s}"))
        claimed: list[str] = []
        for raw in dead[:20]:
            node = as_text(raw)
            if node == self.node_id:
                continue
            # Nodes may run with other TTLs: the heartbeat key expires after the node's own TTL,
            # so while it exists the node is alive whatever this node's TTL says.
            if await self._call(self.redis.exists(node_key(node))):
                continue
            if await self._call(self.redis.zrem(NODES, node)):
                claimed.append(node)  # ZREM answers 1 to exactly one claimant
        return claimed

    async def reap(self, node: str) -> list[int]:
        key = node_users_key(node)
        members = await self._call(self.redis.smembers(key))
        users = sorted(int(u) for u in members)

        def fill(pipe: Pipeline) -> None:
            for user in users:
                pipe.zrem(route_key(user), node)
            pipe.delete(key, delivery_stream(node))  # one slot: the node's tag

        await self._pipeline(fill)
        # The lease key goes last, once the rest is gone: a node that comes back and renews
        # its lease before this finds the key gone at its next heartbeat and registers again,
        # so no route it writes meanwhile is lost to this reap.
        await self._call(self.redis.delete(node_key(node)))
        return users

    async def forget(self) -> None:
        await self._call(self.redis.delete(self._held))

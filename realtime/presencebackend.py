"""What presence keeps outside the node: the seam (:class:`PresenceBackend`) and its Redis
implementation. The in-memory twin is :class:`realtime.memory.MemoryPresence`; one contract
suite (``tests/realtime/test_seams.py``) runs against both.

The keys (all built in :mod:`common.rediskeys`, one user's in one hash slot):
``routes`` (the broker's, read here), ``shown`` (peers were told "online": set NX by the
first socket anywhere), ``grace`` (the last socket closed a moment ago), ``seen`` (last seen,
to the minute), and per node the users it hosts or holds in grace. The registry
(``mm:{nodes}`` and each heartbeat) tells dead nodes apart.

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

SEEN_TTL_S: Final = 90 * 24 * 3600
#: Answers of :meth:`PresenceBackend.settle` besides a last-seen time.
STILL_ONLINE: Final = -1
ANNOUNCED_ELSEWHERE: Final = -2

# KEYS: routes, shown, seen, grace. ARGV: now (s), last seen (ms), seen ttl (ms).
# -1: a live route is left (still online); -2: someone else announced it; else: last seen.
OFFLINE_LUA: Final = """
if redis.call('ZCOUNT', KEYS[1], '(' .. ARGV[1], '+inf') > 0 then return -1 end
redis.call('DEL', KEYS[4])
if redis.call('DEL', KEYS[2]) == 0 then return -2 end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return tonumber(ARGV[2])
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

    async def refresh(self, held: Collection[int], hosted: Collection[int]) -> None:
        """Keep alive this node's list of ``held`` users and the shown marks of ``hosted``."""

    async def claim_dead_nodes(self, now: float) -> list[str]:
        """Nodes whose heartbeat lapsed, each claimed by exactly one caller (at most 20)."""

    async def reap(self, node: str) -> list[int]:
        """Remove a claimed dead node's routes, stream and lists; the users it held."""

    async def forget(self) -> None:
        """This node is leaving: drop its list of users."""


class RedisPresence:
    """:class:`PresenceBackend` on Redis (see the module docstring)."""

    def __init__(self, redis: RedisClient, *, node_id: str, ttl_s: float, timeout_s: float) -> None:
        self.redis, self.node_id, self.ttl_s, self.timeout_s = redis, node_id, ttl_s, timeout_s
        self._held = node_users_key(node_id)

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
        px = int(self.ttl_s * 3000)

        def fill(pipe: Pipeline) -> None:
            pipe.set(shown_key(user), b"1", nx=True, px=px)
            pipe.sadd(self._held, user)
            pipe.pexpire(self._held, px)

        first, *_ = await self._pipeline(fill)
        return bool(first)

    async def hold_grace(self, user: int, seconds: float) -> None:
        await self._call(self.redis.set(grace_key(user), b"1", px=int(seconds * 1000)))

    async def states(self, users: Sequence[int], now: float) -> list[tuple[bool, int]]:
        def fill(pipe: Pipeline) -> None:
            for user in users:
                pipe.zcount(route_key(user), f"({now}", "+inf")
                pipe.exists(grace_key(user))
                pipe.get(seen_key(user))

        replies = await self._pipeline(fill)
        return [
            (bool(replies[i] or replies[i + 1]), int(replies[i + 2] or 0))
            for i in range(0, len(replies), 3)
        ]

    async def settle(self, users: Sequence[int], now: float) -> dict[int, int]:
        args = (repr(now), minute_ms(now), SEEN_TTL_S * 1000)
        calls = [(OFFLINE, offline_keys(user), args) for user in users]
        replies = await self._call(eval_scripts(self.redis, calls))
        return {user: int(r) for user, r in zip(users, replies, strict=True)}

    async def release(self, users: Collection[int]) -> None:
        await self._call(self.redis.srem(self._held, *users))

    async def refresh(self, held: Collection[int], hosted: Collection[int]) -> None:
        px = int(self.ttl_s * 3000)

        def fill(pipe: Pipeline) -> None:
            pipe.sadd(self._held, *held)
            pipe.pexpire(self._held, px)
            for user in hosted:
                pipe.pexpire(shown_key(user), px)

        await self._pipeline(fill)

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
            pipe.delete(key, delivery_stream(node))  # one slot: the node's tag
            pipe.delete(node_key(node))
            for user in users:
                pipe.zrem(route_key(user), node)

        await self._pipeline(fill)
        return users

    async def forget(self) -> None:
        await self._call(self.redis.delete(self._held))

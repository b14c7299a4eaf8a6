"""Fixed-window rate limits kept in Redis, shared by every API process.

One call per attempt: ``await limit(redis, "login:ip:1.2.3.4", max_hits=10, window_s=60)``
raises :class:`api.errors.RateLimited` (HTTP 429 with ``Retry-After``) once the window is full.
The counter and its expiry are set in one pipelined round trip.
"""

from __future__ import annotations

from api.errors import RateLimited
from common.redisclient import RedisClient
from common.rediskeys import RATE_LIMIT_PREFIX

_PREFIX = RATE_LIMIT_PREFIX


async def hits(redis: RedisClient, key: str, *, window_s: int) -> tuple[int, int]:
    """Count one hit on ``key``; return (hits in this window, seconds until it resets)."""
    full_key = _PREFIX + key
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(full_key)
        pipe.expire(full_key, window_s, nx=True)
        pipe.ttl(full_key)
        count, _, ttl = await pipe.execute()
    return int(count), max(int(ttl), 1)


async def limit(redis: RedisClient, key: str, *, max_hits: int, window_s: int) -> None:
    """Count a hit and refuse it with 429 when ``key`` is over ``max_hits`` in the window."""
    count, retry_after = await hits(redis, key, window_s=window_s)
    if count > max_hits:
        raise RateLimited(
            f"too many requests; retry in {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )


async def reset(redis: RedisClient, key: str) -> None:
    await redis.delete(_PREFIX + key)

"""A token-version bump is committed even when Redis cannot be told (no 500 after commit)."""

from __future__ import annotations

from redis.asyncio import Redis

from api.services.accounts import announce_token_version
from tests.support import free_port


async def test_announcing_a_token_version_survives_an_unreachable_redis() -> None:
    dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
    try:
        await announce_token_version(dead, 123456, 7)  # must log, not raise
    finally:
        await dead.aclose()


async def test_announcing_a_token_version_updates_the_cache(redis: Redis) -> None:
    from common.rediskeys import get_token_version

    await announce_token_version(redis, 123457, 3)
    assert await get_token_version(redis, 123457) == 3

"""The shared API services: the block rule and the Redis rate limiter, against real stores."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.errors import RateLimited
from api.services.ratelimit import limit, reset
from api.services.relations import is_blocked_between
from common.models import Block
from tests.api.conftest import UserFactory


async def test_block_is_symmetric(
    sessions: async_sessionmaker[AsyncSession], user_factory: UserFactory
) -> None:
    a, b, c = await user_factory(), await user_factory(), await user_factory()
    async with sessions() as session, session.begin():
        session.add(Block(blocker_id=a.id, blocked_id=b.id))
    async with sessions() as session:
        assert await is_blocked_between(session, a.id, b.id)
        assert await is_blocked_between(session, b.id, a.id)
        assert not await is_blocked_between(session, a.id, c.id)


async def test_rate_limit_refuses_past_the_window_budget(redis: Redis) -> None:
    key = "test:ratelimit"
    await reset(redis, key)
    for _ in range(3):
        await limit(redis, key, max_hits=3, window_s=60)
    with pytest.raises(RateLimited) as excinfo:
        await limit(redis, key, max_hits=3, window_s=60)
    assert excinfo.value.status == 429
    assert excinfo.value.headers is not None
    assert 1 <= int(excinfo.value.headers["Retry-After"]) <= 60
    await reset(redis, key)
    await limit(redis, key, max_hits=3, window_s=60)

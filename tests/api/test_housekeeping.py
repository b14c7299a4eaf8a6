"""Expired refresh and account tokens go a day after expiry, by the API's background task."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.housekeeping import PURGE_AFTER, purge_expired_tokens, run_housekeeping
from common.models import AccountToken, RefreshToken
from tests.api.conftest import UserFactory

NOW = dt.datetime.now(dt.UTC)


async def _tokens(
    sessions: async_sessionmaker[AsyncSession], user_id: int, expiries: list[dt.datetime]
) -> tuple[list[int], list[int]]:
    """One refresh token and one reset token per expiry; their ids."""
    refresh = [
        RefreshToken(
            user_id=user_id,
            family_id=uuid.uuid4(),
            token_hash=hashlib.sha256(secrets.token_bytes(16)).digest(),
            expires_at=expires_at,
        )
        for expires_at in expiries
    ]
    account = [
        AccountToken(
            user_id=user_id,
            purpose="reset_password",
            secret_hash=secrets.token_bytes(32),
            expires_at=expires_at,
        )
        for expires_at in expiries
    ]
    async with sessions() as session, session.begin():
        session.add_all([*refresh, *account])
    return [r.id for r in refresh], [a.id for a in account]


async def _left(
    sessions: async_sessionmaker[AsyncSession], ids: tuple[list[int], list[int]]
) -> tuple[set[int], set[int]]:
    async with sessions() as session:
        refresh = await session.scalars(select(RefreshToken.id).where(RefreshToken.id.in_(ids[0])))
        account = await session.scalars(select(AccountToken.id).where(AccountToken.id.in_(ids[1])))
        return set(refresh), set(account)


async def test_only_tokens_expired_for_over_a_day_are_deleted_in_batches(
    sessions: async_sessionmaker[AsyncSession], user_factory: UserFactory
) -> None:
    user = await user_factory(profile=False)
    old = [NOW - PURGE_AFTER - dt.timedelta(minutes=m) for m in (1, 2, 3, 60, 600)]
    recent = [NOW - dt.timedelta(hours=1), NOW + dt.timedelta(days=30)]
    old_ids = await _tokens(sessions, user.id, old)
    kept_ids = await _tokens(sessions, user.id, recent)

    purged = await purge_expired_tokens(sessions, NOW, batch=2)

    assert await _left(sessions, old_ids) == (set(), set())
    assert await _left(sessions, kept_ids) == (set(kept_ids[0]), set(kept_ids[1]))
    # Other tests' rows may be purged too; at least ours were, over several batches of 2.
    assert purged.refresh_tokens >= 5 and purged.account_tokens >= 5


async def test_the_background_task_purges_and_stops_when_cancelled(
    sessions: async_sessionmaker[AsyncSession], user_factory: UserFactory
) -> None:
    user = await user_factory(profile=False)
    old_ids = await _tokens(sessions, user.id, [NOW - 2 * PURGE_AFTER])
    task = asyncio.create_task(run_housekeeping(sessions, interval_s=0.05))
    try:
        for _ in range(100):
            if await _left(sessions, old_ids) == (set(), set()):
                break
            await asyncio.sleep(0.05)
        assert await _left(sessions, old_ids) == (set(), set())
    finally:
        task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()

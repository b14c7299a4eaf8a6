"""``/api/auth/login`` against the real API and PostgreSQL: refusals that do not tell known
from unknown emails, password rehashing, bans, and the password hashing pool's limit."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.passwords import PasswordPool
from common.models import User
from tests.api.auth_support import field_errors, fresh_ip, login
from tests.api.support import TEST_PASSWORD, UserFactory
from tests.support import TICK


async def test_login_refusals_look_the_same_for_unknown_and_known_emails(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory()
    wrong = await login(api, user.email, "not the password at all")
    unknown = await login(api, "nobody-" + user.email, "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert (
        wrong.json()
        == unknown.json()
        == {
            "code": "invalid_credentials",
            "detail": "email or password is wrong",
        }
    )
    assert ("body", "password") in field_errors(
        await api.post("/api/auth/login", json={"email": user.email}, headers=fresh_ip())
    )


async def test_login_timing_is_similar_for_unknown_and_known_emails(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    """Medians of interleaved samples within a ratio: statistics, not a wall-clock bound."""
    user = await user_factory()
    await login(api, "warm-up@example.com", "x")  # the dummy hash is made on first use
    known: list[float] = []
    unknown: list[float] = []
    loop = asyncio.get_running_loop()
    for i in range(10):
        for email, samples in ((user.email, known), (f"ghost{i}-{user.email}", unknown)):
            started = loop.time()
            response = await login(api, email, "wrong password here")
            samples.append(loop.time() - started)
            assert response.status_code == 401
    known.sort()
    unknown.sort()
    ratio = known[len(known) // 2] / unknown[len(unknown) // 2]
    assert 0.6 < ratio < 1.6, (ratio, known, unknown)


async def test_login_rehashes_old_parameters_and_refuses_banned(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from argon2 import PasswordHasher

    from api.services.passwords import needs_rehash

    user = await user_factory()
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(TEST_PASSWORD)
    async with sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == user.id).values(password_hash=weak))
    assert (await login(api, user.email, TEST_PASSWORD)).status_code == 200
    async with sessions() as session:
        stored = await session.scalar(select(User.password_hash).where(User.id == user.id))
    assert stored is not None and stored != weak and not needs_rehash(stored)

    async with sessions() as session, session.begin():
        await session.execute(
            update(User)
            .where(User.id == user.id)
            .values(banned_until=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        )
    banned = await login(api, user.email, TEST_PASSWORD)
    assert banned.status_code == 403 and banned.json()["code"] == "banned"


async def test_password_pool_refuses_when_saturated() -> None:
    pool = PasswordPool(threads=1, wait_s=TICK)
    try:
        slow = asyncio.ensure_future(pool.hash("x" * 20))
        await asyncio.sleep(0)
        from api.errors import Unavailable

        with pytest.raises(Unavailable) as excinfo:
            await pool.hash("y" * 20)
        assert excinfo.value.code == "busy" and excinfo.value.status == 503
        assert (await slow).startswith("$argon2id$")
    finally:
        pool.close()

"""Refresh tokens and logout against the real API, PostgreSQL and Redis: rotation, reuse
revoking the family, expiry, logging out one device or all, and the token version realtime
reads."""

from __future__ import annotations

import datetime as dt

import httpx
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.models import RefreshToken
from common.rediskeys import get_token_version
from tests.api.auth_support import bearer, field_errors, login, refresh, token_bumps
from tests.api.support import TEST_PASSWORD, UserFactory


async def test_refresh_rotates_and_reuse_revokes_the_family(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory()
    first = (await login(api, user.email, TEST_PASSWORD)).json()
    other_device = (await login(api, user.email, TEST_PASSWORD)).json()

    second = await refresh(api, first["refresh_token"])
    assert second.status_code == 200
    r2 = second.json()["refresh_token"]
    assert r2 != first["refresh_token"]
    third = (await refresh(api, r2)).json()["refresh_token"]

    reused = await refresh(api, first["refresh_token"])
    assert reused.status_code == 401 and reused.json()["code"] == "refresh_reused"
    # The newest token of that family died with it; the other device's family did not.
    dead = await refresh(api, third)
    assert dead.status_code == 401 and dead.json()["code"] == "refresh_invalid"
    assert (await refresh(api, other_device["refresh_token"])).status_code == 200

    async with sessions() as session:
        stored = (
            await session.scalars(
                select(RefreshToken.token_hash).where(RefreshToken.user_id == user.id)
            )
        ).all()
    assert all(len(h) == 32 for h in stored)
    assert first["refresh_token"].encode() not in stored  # hashes only

    unknown = await refresh(api, "x" * 43)
    assert unknown.status_code == 401
    too_long = await api.post("/api/auth/refresh", json={"refresh_token": "x" * 500})
    assert ("body", "refresh_token") in field_errors(too_long)


async def test_expired_refresh_token_is_refused(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory()
    pair = (await login(api, user.email, TEST_PASSWORD)).json()
    async with sessions() as session, session.begin():
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user.id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    response = await refresh(api, pair["refresh_token"])
    assert response.status_code == 401 and response.json()["code"] == "refresh_expired"


async def test_logout_this_device_revokes_only_its_family(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory()
    here = (await login(api, user.email, TEST_PASSWORD)).json()
    there = (await login(api, user.email, TEST_PASSWORD)).json()
    body = {"refresh_token": here["refresh_token"]}
    assert (await api.post("/api/auth/logout", json=body)).status_code == 401
    response = await api.post("/api/auth/logout", json=body, headers=user.headers)
    assert response.status_code == 204
    assert (await refresh(api, here["refresh_token"])).status_code == 401
    assert (await refresh(api, there["refresh_token"])).status_code == 200


async def test_logout_everywhere_kills_old_tokens_and_tells_realtime(
    api: httpx.AsyncClient, redis: Redis, user_factory: UserFactory
) -> None:
    user = await user_factory()
    pair = (await login(api, user.email, TEST_PASSWORD)).json()
    old_access = bearer(pair["access_token"])
    assert (await api.get("/api/auth/me", headers=old_access)).status_code == 200
    assert (await api.post("/api/auth/logout-all", headers=old_access)).status_code == 204

    for headers in (old_access, user.headers):
        response = await api.get("/api/auth/me", headers=headers)
        assert response.status_code == 401 and response.json()["code"] == "token_revoked"
    assert (await refresh(api, pair["refresh_token"])).status_code == 401
    assert await get_token_version(redis, user.id) == 1
    assert 1 in await token_bumps(redis, user.id)
    fresh = (await login(api, user.email, TEST_PASSWORD)).json()
    assert (await api.get("/api/auth/me", headers=bearer(fresh["access_token"]))).status_code == 200

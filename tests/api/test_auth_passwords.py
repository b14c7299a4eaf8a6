"""Password change and reset against the real API, PostgreSQL and Redis: each ends the other
sessions and bumps the token version; reset links are single-use and expire."""

from __future__ import annotations

import datetime as dt
import re

import httpx
from redis.asyncio import Redis
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.models import AccountToken
from common.rediskeys import get_token_version
from common.settings import Settings
from tests.api.auth_support import (
    bearer,
    field_errors,
    fresh_ip,
    login,
    refresh,
    token_bumps,
    wait_for_mail,
)
from tests.api.support import TEST_PASSWORD, UserFactory


async def test_password_change_bumps_version_and_keeps_this_device(
    api: httpx.AsyncClient, redis: Redis, user_factory: UserFactory
) -> None:
    user = await user_factory()
    old = (await login(api, user.email, TEST_PASSWORD)).json()
    headers = bearer(old["access_token"])
    new_password = "a brand new passphrase"
    wrong = await api.post(
        "/api/auth/password",
        json={"current_password": "not it at all", "new_password": new_password},
        headers=headers,
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    weak = await api.post(
        "/api/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": "short"},
        headers=headers,
    )
    assert ("body", "new_password") in field_errors(weak)
    changed = await api.post(
        "/api/auth/password",
        json={"current_password": TEST_PASSWORD, "new_password": new_password},
        headers=headers,
    )
    assert changed.status_code == 200
    assert (await api.get("/api/auth/me", headers=headers)).status_code == 401
    assert (await refresh(api, old["refresh_token"])).status_code == 401
    new_headers = bearer(changed.json()["access_token"])
    assert (await api.get("/api/auth/me", headers=new_headers)).status_code == 200
    assert await get_token_version(redis, user.id) == 1
    assert 1 in await token_bumps(redis, user.id)
    assert (await login(api, user.email, TEST_PASSWORD)).status_code == 401
    assert (await login(api, user.email, new_password)).status_code == 200


async def test_password_reset_is_single_use_and_ends_sessions(
    api: httpx.AsyncClient, redis: Redis, settings: Settings, user_factory: UserFactory
) -> None:
    user = await user_factory()
    old = (await login(api, user.email, TEST_PASSWORD)).json()
    unknown = await api.post(
        "/api/auth/password-reset/request", json={"email": "nobody@example.com"}, headers=fresh_ip()
    )
    known = await api.post(
        "/api/auth/password-reset/request", json={"email": user.email.upper()}, headers=fresh_ip()
    )
    assert unknown.status_code == known.status_code == 202
    assert unknown.json() == known.json()
    mail = await wait_for_mail(settings, user.email, "reset_password")
    match = re.search(r"token is (\S+)", mail["body"])
    assert match
    token = match.group(1)

    new_password = "reset to something new"
    for bad in ("garbage", token + "x", "999999." + token.partition(".")[2]):
        response = await api.post(
            "/api/auth/password-reset/confirm",
            json={"token": bad, "new_password": new_password},
            headers=fresh_ip(),
        )
        assert response.status_code == 400 and response.json()["code"] == "reset_invalid"
    weak = await api.post(
        "/api/auth/password-reset/confirm",
        json={"token": token, "new_password": "1234567890"},
        headers=fresh_ip(),
    )
    assert ("body", "new_password") in field_errors(weak)
    done = await api.post(
        "/api/auth/password-reset/confirm",
        json={"token": token, "new_password": new_password},
        headers=fresh_ip(),
    )
    assert done.status_code == 204
    again = await api.post(
        "/api/auth/password-reset/confirm",
        json={"token": token, "new_password": "yet another passphrase"},
        headers=fresh_ip(),
    )
    assert again.status_code == 400 and again.json()["code"] == "reset_invalid"
    assert (await api.get("/api/auth/me", headers=bearer(old["access_token"]))).status_code == 401
    assert (await refresh(api, old["refresh_token"])).status_code == 401
    assert await get_token_version(redis, user.id) == 1
    assert 1 in await token_bumps(redis, user.id)
    assert (await login(api, user.email, new_password)).status_code == 200


async def test_expired_reset_token_is_refused(
    api: httpx.AsyncClient,
    settings: Settings,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user = await user_factory()
    await api.post(
        "/api/auth/password-reset/request", json={"email": user.email}, headers=fresh_ip()
    )
    mail = await wait_for_mail(settings, user.email, "reset_password")
    match = re.search(r"token is (\S+)", mail["body"])
    assert match
    async with sessions() as session, session.begin():
        await session.execute(
            update(AccountToken)
            .where(AccountToken.user_id == user.id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    response = await api.post(
        "/api/auth/password-reset/confirm",
        json={"token": match.group(1), "new_password": "reset to something new"},
        headers=fresh_ip(),
    )
    assert response.status_code == 400 and response.json()["code"] == "reset_invalid"

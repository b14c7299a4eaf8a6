"""Throttling of ``/api/auth`` against the real API and Redis: registrations per address, failed
logins that cannot lock the owner out, and password reset requests per address."""

from __future__ import annotations

import httpx
from redis.asyncio import Redis

from api.services.accounts import email_key
from api.services.ratelimit import hits
from common.settings import Settings
from tests.api.auth_support import PASSWORD, fresh_email, fresh_ip
from tests.api.support import TEST_PASSWORD, UserFactory


async def test_register_is_rate_limited_per_ip(
    api: httpx.AsyncClient, redis: Redis, settings: Settings
) -> None:
    headers = fresh_ip()
    ip = headers["X-Forwarded-For"]
    for _ in range(settings.register_ip_max):
        await hits(redis, f"register:ip:{ip}", window_s=3600)
    body = {
        "email": fresh_email(),
        "password": PASSWORD,
        "birth_date": "1990-01-01",
        "display_name": "X",
        "gender": "man",
    }
    response = await api.post("/api/auth/register", json=body, headers=headers)
    assert response.status_code == 429 and int(response.headers["Retry-After"]) >= 1


async def test_failed_logins_from_one_address_do_not_lock_the_owner_out(
    api: httpx.AsyncClient, redis: Redis, settings: Settings, user_factory: UserFactory
) -> None:
    user = await user_factory()
    attacker = fresh_ip()
    body = {"email": user.email, "password": "guessing guessing"}
    for _ in range(settings.login_pair_max):
        response = await api.post("/api/auth/login", json=body, headers=attacker)
        assert response.status_code == 401
    refused = await api.post("/api/auth/login", json=body, headers=attacker)
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    # The owner, from their own address, is not affected.
    owner_ip = fresh_ip()
    right = {"email": user.email, "password": TEST_PASSWORD}
    owner = await api.post("/api/auth/login", json=right, headers=owner_ip)
    assert owner.status_code == 200

    # Guessing from many addresses exhausts the account's budget for new addresses only:
    # the owner's address, known from a past login, still gets in.
    for _ in range(settings.login_account_max):
        await hits(redis, f"login:acct:{email_key(user.email)}", window_s=60)
    botnet = await api.post("/api/auth/login", json=body, headers=fresh_ip())
    assert botnet.status_code == 429
    assert (await api.post("/api/auth/login", json=right, headers=owner_ip)).status_code == 200

    # One address spraying many accounts hits its own, larger budget.
    sprayer = fresh_ip()
    for _ in range(settings.login_ip_max):
        await hits(redis, f"login:ip:{sprayer['X-Forwarded-For']}", window_s=60)
    sprayed = await api.post(
        "/api/auth/login",
        json={"email": user.email, "password": TEST_PASSWORD},
        headers=sprayer,
    )
    assert sprayed.status_code == 429


async def test_reset_requests_are_rate_limited_per_address(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user = await user_factory()
    statuses = [
        (
            await api.post(
                "/api/auth/password-reset/request", json={"email": user.email}, headers=fresh_ip()
            )
        ).status_code
        for _ in range(6)
    ]
    assert statuses == [202] * 5 + [429]

"""``/api/auth`` accounts against the real API, PostgreSQL and Redis: registration, ``me``,
email verification codes, and account deletion."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.models import AccountToken, Conversation, Message, Profile, User
from common.settings import Settings
from tests.api.auth_support import (
    PASSWORD,
    bearer,
    code_in,
    field_errors,
    fresh_email,
    fresh_ip,
    login,
    refresh,
    register,
    token_bumps,
    wait_for_mail,
)
from tests.api.support import TEST_PASSWORD, UserFactory


async def test_register_then_me_and_login(api: httpx.AsyncClient) -> None:
    email, pair = await register(api)
    assert pair["token_type"] == "bearer" and pair["expires_in"] > 0
    me = await api.get("/api/auth/me", headers=bearer(pair["access_token"]))
    assert me.status_code == 200
    body = me.json()
    assert body["email"] == email  # normalised to lower case
    assert body["email_verified"] is False and body["has_profile"] is True
    assert body["profile_complete"] is False and "password_hash" not in body
    response = await login(api, email.upper())
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"access_token", "refresh_token", "token_type", "expires_in"}


async def test_register_refusals(api: httpx.AsyncClient) -> None:
    email, _ = await register(api)
    taken = await api.post(
        "/api/auth/register",
        json={
            "email": email.upper(),
            "password": PASSWORD,
            "birth_date": "1990-01-01",
            "display_name": "X",
            "gender": "man",
        },
        headers=fresh_ip(),
    )
    assert taken.status_code == 409 and taken.json()["code"] == "email_taken"

    base = {
        "email": fresh_email(),
        "password": PASSWORD,
        "birth_date": "1990-01-01",
        "display_name": "X",
        "gender": "man",
    }
    today = dt.datetime.now(dt.UTC).date()
    seventeen = today.replace(year=today.year - 17).isoformat()
    cases: list[tuple[dict[str, Any], tuple[Any, ...]]] = [
        ({"birth_date": seventeen}, ("body", "birth_date")),
        ({"password": "short1"}, ("body", "password")),
        ({"password": "password1234"}, ("body", "password")),
        ({"password": "aaaaabbbbbaaaaa"}, ("body", "password")),
        ({"email": "not-an-email"}, ("body", "email")),
        ({"gender": "robot"}, ("body", "gender")),
        ({"display_name": "   "}, ("body", "display_name")),
        ({"is_admin": True}, ("body", "is_admin")),
    ]
    for change, loc in cases:
        response = await api.post("/api/auth/register", json=base | change, headers=fresh_ip())
        assert loc in field_errors(response), (change, response.text)


async def test_me_requires_a_valid_token(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/auth/me")).status_code == 401
    response = await api.get("/api/auth/me", headers=bearer("not.a.token"))
    assert response.status_code == 401 and response.json()["code"].startswith("token_")


async def test_email_verification_with_code_attempt_cap_and_resend(
    api: httpx.AsyncClient, settings: Settings
) -> None:
    email, pair = await register(api)
    headers = bearer(pair["access_token"])
    seen: set[str] = set()
    first = code_in(await wait_for_mail(settings, email, "verify_email", seen))
    wrong = f"{(int(first) + 1) % 1_000_000:06d}"
    bad_format = await api.post("/api/auth/email/verify", json={"code": "12ab56"}, headers=headers)
    assert ("body", "code") in field_errors(bad_format)
    for _ in range(settings.email_code_max_attempts):
        response = await api.post("/api/auth/email/verify", json={"code": wrong}, headers=headers)
        assert response.status_code == 400 and response.json()["code"] == "code_invalid"
    # The cap is reached: even the right code is refused now.
    response = await api.post("/api/auth/email/verify", json={"code": first}, headers=headers)
    assert response.status_code == 400 and response.json()["code"] == "code_exhausted"

    resent = await api.post("/api/auth/email/resend", headers=headers)
    assert resent.status_code == 202
    second = code_in(await wait_for_mail(settings, email, "verify_email", seen))
    response = await api.post("/api/auth/email/verify", json={"code": second}, headers=headers)
    assert response.status_code == 200 and response.json()["email_verified"] is True
    again = await api.post("/api/auth/email/verify", json={"code": second}, headers=headers)
    assert again.status_code == 409 and again.json()["code"] == "already_verified"
    resend = await api.post("/api/auth/email/resend", headers=headers)
    assert resend.status_code == 409


async def test_expired_email_code_is_refused(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    email, pair = await register(api)
    code = code_in(await wait_for_mail(settings, email, "verify_email"))
    async with sessions() as session, session.begin():
        user_id = await session.scalar(select(User.id).where(User.email == email))
        await session.execute(
            update(AccountToken)
            .where(AccountToken.user_id == user_id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    response = await api.post(
        "/api/auth/email/verify", json={"code": code}, headers=bearer(pair["access_token"])
    )
    assert response.status_code == 400 and response.json()["code"] == "code_expired"


async def test_delete_account_anonymises_and_frees_the_email(
    api: httpx.AsyncClient,
    redis: Redis,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    user, other = await user_factory(), await user_factory()
    async with sessions() as session, session.begin():
        conversation = Conversation()
        session.add(conversation)
        await session.flush()
        session.add(
            Message(conversation_id=conversation.id, seq=1, sender_id=user.id, cmid="m1", body="hi")
        )
        conversation_id = conversation.id
    pair = (await login(api, user.email, TEST_PASSWORD)).json()
    wrong = await api.request(
        "DELETE", "/api/auth/me", json={"password": "not the password"}, headers=user.headers
    )
    assert wrong.status_code == 403 and wrong.json()["code"] == "wrong_password"
    missing = await api.request("DELETE", "/api/auth/me", json={}, headers=user.headers)
    assert ("body", "password") in field_errors(missing)
    assert (await api.request("DELETE", "/api/auth/me", json={"password": "x"})).status_code == 401

    response = await api.request(
        "DELETE", "/api/auth/me", json={"password": TEST_PASSWORD}, headers=user.headers
    )
    assert response.status_code == 204
    assert (await api.get("/api/auth/me", headers=user.headers)).status_code == 401
    assert (await refresh(api, pair["refresh_token"])).status_code == 401
    assert (await login(api, user.email, TEST_PASSWORD)).status_code == 401
    assert 1 in await token_bumps(redis, user.id)
    async with sessions() as session:
        row = await session.get(User, user.id)
        assert row is not None and row.deleted_at is not None and not row.is_active
        assert row.email != user.email and row.email.endswith("@deleted.invalid")
        assert not row.password_hash.startswith("$argon2")
        assert await session.get(Profile, user.id) is None
        # Their messages stay for the other party, from the (anonymised) deleted user.
        kept = await session.scalar(
            select(Message.sender_id).where(Message.conversation_id == conversation_id)
        )
        assert kept == user.id
    assert (await api.get("/api/auth/me", headers=other.headers)).status_code == 200
    # The address can be used again.
    await register(api, email=user.email)

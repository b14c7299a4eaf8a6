"""``/api/auth`` against the real API, PostgreSQL and Redis: accounts, tokens, mail codes.

Client addresses are simulated with ``X-Forwarded-For`` (uvicorn trusts it from loopback), so
each test throttles only itself. Mail is read from the development outbox folder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.accounts import email_key
from api.services.mail import outbox_dir
from api.services.passwords import PasswordPool
from api.services.ratelimit import hits
from common.events import SAFETY_STREAM, TokenBump, decode_event
from common.models import AccountToken, Conversation, Message, Profile, RefreshToken, User
from common.rediskeys import get_token_version
from common.settings import Settings
from tests.api.conftest import TEST_PASSWORD, UserFactory
from tests.support import TICK

PASSWORD = "a perfectly fine passphrase"
_ips = itertools.count(1)
_emails = itertools.count(1)


def fresh_ip() -> dict[str, str]:
    """Headers that make the request come from an address no other test uses."""
    n = next(_ips)
    return {"X-Forwarded-For": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"}


def fresh_email() -> str:
    return f"Person{next(_emails)}-{dt.datetime.now().timestamp():.0f}@Example.COM"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(api: httpx.AsyncClient, email: str | None = None, **fields: Any) -> Any:
    body = {
        "email": email or fresh_email(),
        "password": PASSWORD,
        "birth_date": "1990-01-31",
        "display_name": "Sam",
        "gender": "nonbinary",
    } | fields
    response = await api.post("/api/auth/register", json=body, headers=fresh_ip())
    assert response.status_code == 201, response.text
    return body["email"].lower(), response.json()


async def login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=fresh_ip()
    )


async def wait_for_mail(
    settings: Settings, to: str, kind: str, seen: set[str] | None = None
) -> dict[str, str]:
    """The newest mail of ``kind`` to ``to`` not in ``seen`` (names added to ``seen``)."""
    seen = seen if seen is not None else set()
    folder = outbox_dir(settings)
    for _ in range(100):
        for path in sorted(folder.glob("*.json"), reverse=True) if folder.exists() else []:
            if path.name in seen:
                continue
            mail: dict[str, str] = json.loads(path.read_text())
            if mail["to"] == to and mail["kind"] == kind:
                seen.add(path.name)
                return mail
        await asyncio.sleep(TICK)
    raise AssertionError(f"no {kind} mail to {to}")


def code_in(mail: dict[str, str]) -> str:
    match = re.search(r"\b(\d{6})\b", mail["body"])
    assert match
    return match.group(1)


async def token_bumps(redis: Redis, user_id: int) -> list[int]:
    entries: list[Any] = await redis.xrevrange(SAFETY_STREAM, count=500) or []
    versions = []
    for _, fields in entries:
        event = decode_event(bytes(fields[b"e"]))
        if isinstance(event, TokenBump) and event.user == user_id:
            versions.append(event.version)
    return versions


def field_errors(response: httpx.Response) -> list[tuple[Any, ...]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    return [tuple(e["loc"]) for e in body["detail"]]


# Registration and me -----------------------------------------------------------------------


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


async def test_me_requires_a_valid_token(api: httpx.AsyncClient) -> None:
    assert (await api.get("/api/auth/me")).status_code == 401
    response = await api.get("/api/auth/me", headers=bearer("not.a.token"))
    assert response.status_code == 401 and response.json()["code"].startswith("token_")


# Email verification ------------------------------------------------------------------------


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


# Login -------------------------------------------------------------------------------------


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


# Refresh tokens ----------------------------------------------------------------------------


async def refresh(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await api.post("/api/auth/refresh", json={"refresh_token": token})


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


# Logout, token version ---------------------------------------------------------------------


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


# Password reset ----------------------------------------------------------------------------


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


# Account deletion --------------------------------------------------------------------------


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

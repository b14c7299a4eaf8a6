"""The seams between areas: the content filter on profile text and at registration, and the
trust events that likes, matches and email verification record, through the real API."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import moderation
from common.models import ModerationLog, ModerationWord, Profile, TrustEvent, User
from common.settings import Settings
from common.trust import TRUST_DEFAULT, TRUST_DELTAS
from tests.api.auth_support import bearer, code_in, fresh_email, fresh_ip, register, wait_for_mail
from tests.api.conftest import TestUser, UserFactory
from tests.api.test_safety import trust_of

REJECTED, WARNED = "qzvrejectword", "qzvwarnword"
_names = itertools.count(1)


@pytest.fixture
async def words(sessions: async_sessionmaker[AsyncSession], redis: Redis) -> AsyncIterator[None]:
    """One reject and one warn word in the live list (removed afterwards)."""
    async with sessions() as session, session.begin():
        session.add_all(
            [
                ModerationWord(pattern=REJECTED, category="abuse", severity=4, action="reject"),
                ModerationWord(pattern=WARNED, category="spam", severity=2, action="warn"),
            ]
        )
    await moderation.list_changed(redis)
    yield
    async with sessions() as session, session.begin():
        await session.execute(
            delete(ModerationWord).where(ModerationWord.pattern.in_((REJECTED, WARNED)))
        )
    await moderation.list_changed(redis)


async def log_rows(
    sessions: async_sessionmaker[AsyncSession], user_id: int | None, matched: str
) -> list[tuple[str, str]]:
    async with sessions() as session:
        query = select(ModerationLog.source, ModerationLog.action).where(
            ModerationLog.matched == matched
        )
        query = query.where(
            ModerationLog.user_id.is_(None) if user_id is None else ModerationLog.user_id == user_id
        )
        return [(row.source, row.action) for row in (await session.execute(query)).all()]


async def trust_reasons(sessions: async_sessionmaker[AsyncSession], user_id: int) -> list[str]:
    async with sessions() as session:
        rows = await session.scalars(
            select(TrustEvent.reason).where(TrustEvent.user_id == user_id).order_by(TrustEvent.id)
        )
        return list(rows)


@pytest.mark.usefixtures("words")
async def test_rejected_bio_or_name_is_refused_and_changes_nothing(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory(display_name="Before")
    for field, text in (("bio", f"hello {REJECTED} there"), ("display_name", REJECTED.title())):
        refused = await api.patch(
            "/api/profiles/me", json={field: text, "gender": "man"}, headers=user.headers
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "content_rejected"
        assert field in refused.json()["detail"]
    async with sessions() as session:
        profile = await session.get(Profile, user.id)
        assert profile is not None
        # Nothing of the refused requests landed, not even the harmless gender.
        assert (profile.bio, profile.display_name, profile.gender) == ("", "Before", "woman")
    assert sorted(await log_rows(sessions, user.id, REJECTED)) == [
        ("bio", "reject"),
        ("display_name", "reject"),
    ]
    penalty = TRUST_DELTAS["content_rejected"]
    assert await trust_of(sessions, user.id) == TRUST_DEFAULT + 2 * penalty
    assert await trust_reasons(sessions, user.id) == ["content_rejected", "content_rejected"]


@pytest.mark.usefixtures("words")
async def test_warned_bio_goes_through_and_is_logged(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory()
    bio = f"  ask me about {WARNED}  "
    response = await api.patch("/api/profiles/me", json={"bio": bio}, headers=user.headers)
    assert response.status_code == 200, response.text
    assert response.json()["bio"] == bio.strip()
    assert await log_rows(sessions, user.id, WARNED) == [("bio", "warn")]
    assert await trust_of(sessions, user.id) == TRUST_DEFAULT  # a warn costs nothing
    clean = await api.patch("/api/profiles/me", json={"bio": "plain words"}, headers=user.headers)
    assert clean.status_code == 200
    assert await log_rows(sessions, user.id, WARNED) == [("bio", "warn")]


@pytest.mark.usefixtures("words")
async def test_registration_refuses_a_rejected_display_name(
    api: httpx.AsyncClient, sessions: async_sessionmaker[AsyncSession]
) -> None:
    email = fresh_email()
    before = len(await log_rows(sessions, None, REJECTED))
    body = {
        "email": email,
        "password": "a perfectly fine passphrase",
        "birth_date": "1990-01-31",
        "display_name": f"The {REJECTED}",
        "gender": "woman",
    }
    refused = await api.post("/api/auth/register", json=body, headers=fresh_ip())
    assert refused.status_code == 422 and refused.json()["code"] == "content_rejected"
    async with sessions() as session:
        assert await session.scalar(select(User.id).where(User.email == email.lower())) is None
    # Logged without a user: the account was never created.
    after = await log_rows(sessions, None, REJECTED)
    assert after.count(("display_name", "reject")) == before + 1
    # The same address registers fine with another name.
    await register(api, email, display_name="Fine Name")


async def test_a_like_and_a_match_move_trust_once(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    a, b = await user_factory(), await user_factory()

    async def swipe(who: TestUser, route: str, target: TestUser) -> bool:
        response = await api.post(route, json={"target_id": target.id}, headers=who.headers)
        assert response.status_code == 200, response.text
        matched: bool = response.json()["matched"]
        return matched

    assert not await swipe(a, "/api/likes", b)
    liked = TRUST_DEFAULT + TRUST_DELTAS["liked"]
    assert await trust_of(sessions, b.id) == liked
    assert await trust_of(sessions, a.id) == TRUST_DEFAULT
    # Toggling the like cannot farm trust for a friend.
    assert not await swipe(a, "/api/passes", b)
    assert not await swipe(a, "/api/likes", b)
    assert await trust_of(sessions, b.id) == liked
    assert await trust_reasons(sessions, b.id) == ["liked"]

    assert await swipe(b, "/api/likes", a)
    match = TRUST_DELTAS["match"]
    assert await trust_of(sessions, a.id) == TRUST_DEFAULT + TRUST_DELTAS["liked"] + match
    assert await trust_of(sessions, b.id) == liked + match
    assert await trust_reasons(sessions, a.id) == ["liked", "match"]
    assert await trust_reasons(sessions, b.id) == ["liked", "match"]


async def test_email_verification_moves_trust(
    api: httpx.AsyncClient, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> None:
    email, pair = await register(api)
    user_id = (await api.get("/api/auth/me", headers=bearer(pair["access_token"]))).json()["id"]
    assert await trust_reasons(sessions, user_id) == []
    code = code_in(await wait_for_mail(settings, email, "verify_email"))
    response = await api.post(
        "/api/auth/email/verify", json={"code": code}, headers=bearer(pair["access_token"])
    )
    assert response.status_code == 200
    assert await trust_of(sessions, user_id) == TRUST_DEFAULT + TRUST_DELTAS["email_verified"]
    assert await trust_reasons(sessions, user_id) == ["email_verified"]

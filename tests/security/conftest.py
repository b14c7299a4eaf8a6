"""Fixtures of the security suite: the API tests' user factory, and one user with one of every
kind of object (photo, match, conversation and its messages, notification, block, report) for
the cross-user checks."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.models import Block, Notification, Report
from tests.api.conftest import user_factory
from tests.api.support import UserFactory
from tests.api.test_safety import make_match
from tests.security.support import Victim, jpeg_bytes

__all__ = ["Victim", "user_factory", "victim"]


@pytest.fixture
async def victim(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> Victim:
    a, friend, blocked = await user_factory(), await user_factory(), await user_factory()
    uploaded = await api.post(
        "/api/photos",
        files={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")},
        headers=a.headers,
    )
    assert uploaded.status_code == 201, uploaded.text
    photo = uploaded.json()
    match_id, cid = await make_match(sessions, a, friend, messages=2)
    async with sessions() as session, session.begin():
        note = Notification(user_id=a.id, kind="system", payload={"type": "welcome"})
        report = Report(
            reporter_id=a.id, reported_id=blocked.id, type="scam", reason="asked me for money twice"
        )
        session.add_all([note, report, Block(blocker_id=a.id, blocked_id=blocked.id)])
        await session.flush()
        note_id, report_id = note.id, report.id
    return Victim(
        user=a,
        friend=friend,
        blocked=blocked,
        photo_id=photo["id"],
        photo_key=photo["url"].rsplit("/", 1)[-1],
        match_id=match_id,
        cid=cid,
        notification_id=note_id,
        report_id=report_id,
    )

"""Trust moves and moderation log rows against the real schema, through the ORM service and
through the asyncpg statements the realtime server may use."""

from __future__ import annotations

import asyncpg
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.trust import apply_trust
from common.models import ModerationLog, TrustEvent, User
from common.moderation import INSERT_LOG_SQL
from common.trust import APPLY_TRUST_SQL, TRUST_DELTAS
from tests.api.conftest import UserFactory
from tests.conftest import TEST_DB_URL


async def _score_and_deltas(
    sessions: async_sessionmaker[AsyncSession], user_id: int
) -> tuple[int | None, list[tuple[int, str]]]:
    async with sessions() as session:
        score = await session.scalar(select(User.trust_score).where(User.id == user_id))
        rows = (
            await session.execute(
                select(TrustEvent.delta, TrustEvent.reason)
                .where(TrustEvent.user_id == user_id)
                .order_by(TrustEvent.id)
            )
        ).all()
    return score, [(row.delta, row.reason) for row in rows]


async def test_apply_trust_clamps_at_both_ends_and_records_events(
    user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory()
    async with sessions() as session:
        scores = [
            await apply_trust(session, user_id=user.id, reason="email_verified") for _ in range(11)
        ]
        await session.commit()
    assert scores[-1] == 100 and scores[:2] == [55, 60]
    async with sessions() as session:
        for _ in range(11):
            await apply_trust(session, user_id=user.id, reason="report_confirmed")
        assert await apply_trust(session, user_id=2**62, reason="liked") is None
        await session.commit()
    score, deltas = await _score_and_deltas(sessions, user.id)
    assert score == 0
    assert deltas == [(5, "email_verified")] * 11 + [(-10, "report_confirmed")] * 11


async def test_trust_moves_only_if_the_caller_commits(
    user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory()
    async with sessions() as session:
        await apply_trust(session, user_id=user.id, reason="blocked")
        await session.rollback()
    assert await _score_and_deltas(sessions, user.id) == (50, [])


async def test_realtime_statements_match_the_schema(
    user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    user = await user_factory()
    connection = await asyncpg.connect(TEST_DB_URL.replace("+asyncpg", ""))
    try:
        for _ in range(6):
            await connection.execute(
                APPLY_TRUST_SQL, user.id, TRUST_DELTAS["report_confirmed"], "report_confirmed"
            )
        await connection.execute(
            INSERT_LOG_SQL, user.id, "message", "contact_info", "warn", "@phone"
        )
    finally:
        await connection.close()
    score, deltas = await _score_and_deltas(sessions, user.id)
    assert score == 0 and deltas == [(-10, "report_confirmed")] * 6
    async with sessions() as session:
        logged = (
            await session.execute(
                select(ModerationLog.source, ModerationLog.action, ModerationLog.matched).where(
                    ModerationLog.user_id == user.id
                )
            )
        ).all()
    assert [tuple(row) for row in logged] == [("message", "warn", "@phone")]

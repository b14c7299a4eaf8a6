"""Blocks and reports: a user's own safety tools.

Owns the ``blocks`` and ``reports`` tables from the user's side (admins resolve reports in
``api/services/admin_reports.py``). A block is total and symmetric (the rule itself is
``api/services/relations.py``); creating one also ends a live match (the conversation closes,
``matches.unmatched_at`` is set), forgets the notifications each had about the other, moves the
blocked user's trust, and, after the commit, publishes ``Block`` and ``Unmatch`` so every
realtime node cuts the pair at once. Unblocking removes the block only: the match stays ended.
Reports work whatever the block state; one pending report per reporter and reported user, and
a per-reporter rate limit, keep them from becoming a harassment tool of their own.

Must not: publish before the commit, or decide visibility other than through ``relations``.
"""

from __future__ import annotations

from typing import Any, Final, cast

from sqlalchemy import delete, exists, func, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.errors import ApiError, Conflict, NotFound
from api.schemas.safety import (
    BlockList,
    BlockOut,
    ReportIn,
    ReportList,
    ReportOut,
    ReportStatus,
    ReportType,
)
from api.services import notifications
from api.services.matching import (
    advisory_lock,
    end_match_between,
    lock_pair,
    publish_after_commit,
)
from api.services.ratelimit import limit
from api.services.trust import apply_trust, first_in_window
from common import events
from common.models import (
    Block,
    ConversationMember,
    Message,
    Profile,
    Report,
    User,
)
from common.redisclient import RedisClient

REPORTS_PER_HOUR: Final = 10
LIST_MAX: Final = 500
#: The trust penalty of being blocked counts once per pair per this window, however often the
#: blocker toggles the block.
BLOCK_PENALTY_WINDOW_S: Final = 30 * 24 * 3600


async def _require_user(session: AsyncSession, user_id: int) -> None:
    found = await session.scalar(
        select(exists().where(User.id == user_id, User.deleted_at.is_(None)))
    )
    if not found:
        raise NotFound("no such user")


async def block(
    session: AsyncSession, redis: RedisClient, *, user_id: int, target_id: int
) -> tuple[BlockOut, bool]:
    """Block ``target_id`` (idempotent); returns the block and whether it is new."""
    if target_id == user_id:
        raise ApiError("you cannot block yourself", code="invalid_target")
    await _require_user(session, target_id)
    await lock_pair(session, user_id, target_id)
    created = await session.scalar(
        pg_insert(Block)
        .values(blocker_id=user_id, blocked_id=target_id)
        .on_conflict_do_nothing()
        .returning(Block.created_at)
    )
    published: list[events.SafetyEvent] = []
    if created is not None:
        published.append(events.Block(blocker=user_id, blocked=target_id))
        ended = await end_match_between(session, user_id=user_id, other_id=target_id)
        if ended is not None:
            published.append(ended)
        await notifications.forget_between(session, user_id, target_id)
        if await first_in_window(
            redis,
            reason="blocked",
            actor=user_id,
            target=target_id,
            window_s=BLOCK_PENALTY_WINDOW_S,
        ):
            await apply_trust(session, user_id=target_id, reason="blocked")
    out = await _block_out(session, user_id=user_id, target_id=target_id)
    await session.commit()
    if published:
        await publish_after_commit(redis, *published)
    return out, created is not None


async def _block_out(session: AsyncSession, *, user_id: int, target_id: int) -> BlockOut:
    row = (
        await session.execute(
            select(Block.blocked_id, Block.created_at, Profile.display_name)
            .outerjoin(Profile, Profile.user_id == Block.blocked_id)
            .where(Block.blocker_id == user_id, Block.blocked_id == target_id)
        )
    ).one()
    return BlockOut(
        user_id=row.blocked_id, display_name=row.display_name, blocked_at=row.created_at
    )


async def unblock(
    session: AsyncSession, redis: RedisClient, *, user_id: int, target_id: int
) -> None:
    """Remove your block of ``target_id``; a match it ended stays ended."""
    removed = await session.scalar(
        delete(Block)
        .where(Block.blocker_id == user_id, Block.blocked_id == target_id)
        .returning(Block.blocked_id)
    )
    if removed is None:
        raise NotFound("you have not blocked this user", code="not_blocked")
    await session.commit()
    await publish_after_commit(redis, events.Unblock(blocker=user_id, blocked=target_id))


async def list_blocks(session: AsyncSession, *, user_id: int) -> BlockList:
    """The people you blocked, newest first: id and display name, never an email."""
    rows = (
        await session.execute(
            select(Block.blocked_id, Block.created_at, Profile.display_name)
            .outerjoin(Profile, Profile.user_id == Block.blocked_id)
            .where(Block.blocker_id == user_id)
            .order_by(Block.created_at.desc(), Block.blocked_id.desc())
            .limit(LIST_MAX)
        )
    ).all()
    return BlockList(
        items=[
            BlockOut(
                user_id=row.blocked_id, display_name=row.display_name, blocked_at=row.created_at
            )
            for row in rows
        ]
    )


async def _check_evidence(
    session: AsyncSession, *, reporter_id: int, reported_id: int, body: ReportIn
) -> dict[str, Any] | None:
    """The evidence as stored; every message must exist in a conversation both people are in
    (someone else's conversation answers 404, exactly like a missing one)."""
    if body.evidence is None:
        return None
    refs = sorted({(ref.cid, ref.seq) for ref in body.evidence.messages})
    if refs:
        mine = aliased(ConversationMember)
        theirs = aliased(ConversationMember)
        found = await session.scalar(
            select(func.count())
            .select_from(Message)
            .join(
                mine,
                (mine.conversation_id == Message.conversation_id) & (mine.user_id == reporter_id),
            )
            .join(
                theirs,
                (theirs.conversation_id == Message.conversation_id)
                & (theirs.user_id == reported_id),
            )
            .where(tuple_(Message.conversation_id, Message.seq).in_(refs))
        )
        if found != len(refs):
            raise NotFound("a message in the evidence was not found", code="evidence_not_found")
    return {"messages": [{"cid": cid, "seq": seq} for cid, seq in refs]}


def _report_out(row: Report) -> ReportOut:
    return ReportOut(
        id=row.id,
        user_id=row.reported_id,
        # The CHECK constraints keep both within their Literal types.
        type=cast(ReportType, row.type),
        status=cast(ReportStatus, row.status),
        created_at=row.created_at,
        resolved_at=row.resolved_at,
    )


async def report(
    session: AsyncSession, redis: RedisClient, *, reporter_id: int, body: ReportIn
) -> ReportOut:
    """File a report; one pending report per person you report, and a few an hour."""
    reported_id = body.user_id
    if reported_id == reporter_id:
        raise ApiError("you cannot report yourself", code="invalid_target")
    await _require_user(session, reported_id)
    await limit(redis, f"report:{reporter_id}", max_hits=REPORTS_PER_HOUR, window_s=3600)
    # Serialize two submissions of the same pair, so "one pending report" holds under races.
    await advisory_lock(session, f"mm:report:{reporter_id}:{reported_id}")
    earlier = (
        await session.scalars(
            select(Report.status).where(
                Report.reporter_id == reporter_id, Report.reported_id == reported_id
            )
        )
    ).all()
    if "pending" in earlier:
        raise Conflict(
            "you already reported this user; it is being reviewed", code="report_pending"
        )
    evidence = await _check_evidence(
        session, reporter_id=reporter_id, reported_id=reported_id, body=body
    )
    row = Report(
        reporter_id=reporter_id,
        reported_id=reported_id,
        type=body.type,
        reason=body.reason,
        evidence=evidence,
        status="pending",
    )
    session.add(row)
    if not earlier:
        # A reporter's first report on someone costs them trust; repeats do not pile up.
        await apply_trust(session, user_id=reported_id, reason="reported")
    await session.flush()
    await session.refresh(row)
    out = _report_out(row)
    await session.commit()
    return out


async def my_reports(session: AsyncSession, *, reporter_id: int) -> ReportList:
    """Reports you filed, newest first, with their status."""
    rows = (
        await session.scalars(
            select(Report)
            .where(Report.reporter_id == reporter_id)
            .order_by(Report.id.desc())
            .limit(LIST_MAX)
        )
    ).all()
    return ReportList(items=[_report_out(row) for row in rows])

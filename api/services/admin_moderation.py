"""Admin moderation: the word list (list, create, update, delete), the live check, the log.

Every change to the list is audited in its transaction and, after the commit, announced through
``moderation.list_changed`` so every process reloads its matcher. A pattern is validated before
it is stored: a bad regex is a 422, never a broken matcher.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError, Conflict, NotFound
from api.schemas import admin as schemas
from api.services import moderation
from api.services.admin import audit, where_given
from api.services.paging import newest_first, next_cursor
from common.models import ModerationLog, ModerationWord
from common.moderation import validate_pattern
from common.redisclient import RedisClient


def _word(row: ModerationWord) -> schemas.WordOut:
    return schemas.WordOut(
        id=row.id,
        pattern=row.pattern,
        is_regex=row.is_regex,
        category=row.category,
        severity=row.severity,
        action=cast(schemas.ModerationAction, row.action),
        created_at=row.created_at,
        created_by=row.created_by,
    )


def _require_valid(pattern: str, is_regex: bool) -> None:
    problem = validate_pattern(pattern, is_regex)
    if problem is not None:
        raise ApiError(problem, code="invalid_pattern", status=422)


async def list_words(session: AsyncSession, redis: RedisClient) -> schemas.WordList:
    rows = (await session.scalars(select(ModerationWord).order_by(ModerationWord.id))).all()
    matcher = await moderation.get_matcher(session, redis)
    return schemas.WordList(items=[_word(row) for row in rows], errors=matcher.errors)


async def create_word(
    session: AsyncSession, redis: RedisClient, *, admin_id: int, body: schemas.WordIn
) -> schemas.WordOut:
    _require_valid(body.pattern, body.is_regex)
    row = await session.scalar(
        pg_insert(ModerationWord)
        .values(**body.model_dump(), created_by=admin_id)
        .on_conflict_do_nothing(index_elements=[ModerationWord.pattern])
        .returning(ModerationWord)
    )
    if row is None:
        raise Conflict("that pattern is already on the list", code="pattern_exists")
    out = _word(row)
    audit(
        session,
        admin_id=admin_id,
        action="moderation_word.create",
        target_type="moderation_word",
        target_id=row.id,
        details=body.model_dump(),
    )
    await session.commit()
    await moderation.list_changed(redis)
    return out


async def update_word(
    session: AsyncSession,
    redis: RedisClient,
    *,
    admin_id: int,
    word_id: int,
    body: schemas.WordPatch,
) -> schemas.WordOut:
    row = await session.scalar(
        select(ModerationWord).where(ModerationWord.id == word_id).with_for_update()
    )
    if row is None:
        raise NotFound("no such word")
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    for name, value in changes.items():
        setattr(row, name, value)
    _require_valid(row.pattern, row.is_regex)
    audit(
        session,
        admin_id=admin_id,
        action="moderation_word.update",
        target_type="moderation_word",
        target_id=word_id,
        details=changes,
    )
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict("that pattern is already on the list", code="pattern_exists") from exc
    out = _word(row)
    await session.commit()
    await moderation.list_changed(redis)
    return out


async def delete_word(
    session: AsyncSession, redis: RedisClient, *, admin_id: int, word_id: int
) -> None:
    row = await session.get(ModerationWord, word_id)
    if row is None:
        raise NotFound("no such word")
    audit(
        session,
        admin_id=admin_id,
        action="moderation_word.delete",
        target_type="moderation_word",
        target_id=word_id,
        details={"pattern": row.pattern},
    )
    await session.delete(row)
    await session.commit()
    await moderation.list_changed(redis)


async def check(session: AsyncSession, redis: RedisClient, *, text: str) -> schemas.CheckOut:
    """Try the live filter on a text (nothing is logged)."""
    verdict = (await moderation.get_matcher(session, redis)).check(text)
    return schemas.CheckOut(
        action=verdict.action,
        category=verdict.category,
        matched=verdict.matched,
        severity=verdict.severity,
    )


async def moderation_log(
    session: AsyncSession,
    *,
    user_id: int | None,
    category: str | None,
    action: str | None,
    source: str | None,
    limit: int,
    cursor: str | None,
) -> schemas.ModerationLogPage:
    query = where_given(
        select(ModerationLog),
        (ModerationLog.user_id, user_id),
        (ModerationLog.category, category),
        (ModerationLog.action, action),
        (ModerationLog.source, source),
    )
    rows = (await session.scalars(newest_first(query, ModerationLog.id, cursor, limit))).all()
    items = [
        schemas.ModerationLogOut(
            id=row.id,
            user_id=row.user_id,
            source=row.source,
            category=row.category,
            action=row.action,
            matched=row.matched,
            created_at=row.created_at,
        )
        for row in rows[:limit]
    ]
    return schemas.ModerationLogPage(
        items=items, next_cursor=next_cursor([row.id for row in rows], limit)
    )

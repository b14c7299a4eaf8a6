"""The admin console's logic: stats, report queue and resolution, users and bans, word list,
moderation and audit logs.

Owns the audit trail: every admin mutation goes through :func:`audit`, in the same transaction
as the change, so an action and its audit row commit or vanish together. A ban sets
``banned_until`` (a far-future date for a permanent ban: NULL means "not banned"), bumps the
token version, revokes refresh tokens and, after the commit, writes the new version to Redis
and publishes ``Ban`` + ``TokenBump`` so the user's sockets close at once; ``CurrentUser``
refuses the user until the ban expires. Reads are not audited.

Must not: be reachable by a non-admin (every route takes ``AdminUser``), or publish before the
commit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Any, Final, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import ColumnElement, Select, func, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError, Conflict, NotFound
from api.schemas import admin as schemas
from api.schemas.safety import ReportStatus, ReportType
from api.services import moderation, notifications
from api.services.matching import publish_after_commit
from api.services.paging import newest_first, next_cursor
from api.services.trust import apply_trust
from common import events
from common.cluster import live_nodes
from common.models import (
    AdminAuditLog,
    Match,
    Message,
    ModerationLog,
    ModerationWord,
    Profile,
    RefreshToken,
    Report,
    User,
)
from common.moderation import validate_pattern
from common.rediskeys import set_token_version
from common.settings import Settings

#: What a permanent ban stores in ``banned_until`` (NULL already means "not banned").
PERMANENT_BAN: Final = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)
#: A node is listed as live while its heartbeat is younger than this many heartbeats.
STALE_HEARTBEATS: Final = 3


def audit(
    session: AsyncSession,
    *,
    admin_id: int,
    action: str,
    target_type: str,
    target_id: int | None,
    details: dict[str, Any] | None = None,
) -> None:
    """Record an admin action in the caller's transaction (who, what, target; when is now)."""
    session.add(
        AdminAuditLog(
            admin_id=admin_id,
            action=action,
            target_type=target_type,
            target_id=target_id,
            details=details or {},
        )
    )


def _where_given(query: Select[Any], *filters: tuple[Any, object | None]) -> Select[Any]:
    """``query`` narrowed by ``column == value`` for every filter whose value was given."""
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    return query


# --- stats ------------------------------------------------------------------------------------


async def stats(session: AsyncSession, redis: Redis, settings: Settings) -> schemas.Stats:
    """Counts from PostgreSQL, connections from the realtime nodes' heartbeats."""
    now = func.now()
    utc_midnight = func.timezone("UTC", func.date_trunc("day", func.timezone("UTC", now)))

    def count(where: ColumnElement[bool], model: Any) -> Any:
        return select(func.count()).select_from(model).where(where).scalar_subquery()

    row = (
        await session.execute(
            select(
                count(User.deleted_at.is_(None), User).label("users"),
                count(
                    User.deleted_at.is_(None) & (User.last_active_at > now - dt.timedelta(days=1)),
                    User,
                ).label("active"),
                count(User.banned_until > now, User).label("banned"),
                count(Match.unmatched_at.is_(None), Match).label("matches"),
                count(Message.created_at >= utc_midnight, Message).label("messages"),
                count(Report.status == "pending", Report).label("pending"),
            )
        )
    ).one()
    try:
        nodes = await live_nodes(redis, stale_after_s=settings.heartbeat_s * STALE_HEARTBEATS)
    except (RedisError, OSError):
        nodes = []  # the counts still help while Redis is away
    wall = time.time()
    return schemas.Stats(
        users=row.users,
        active_24h=row.active,
        banned=row.banned,
        matches=row.matches,
        messages_today=row.messages,
        pending_reports=row.pending,
        live_connections=sum(node.connections for node in nodes),
        nodes=[
            schemas.NodeStats(
                id=node.id,
                address=node.address,
                connections=node.connections,
                users=node.users,
                started_at=node.started_at,
                heartbeat_age_s=max(0.0, wall - node.heartbeat_at),
            )
            for node in nodes
        ],
    )


# --- reports ----------------------------------------------------------------------------------


def _report(row: Report) -> schemas.AdminReport:
    return schemas.AdminReport(
        id=row.id,
        reporter_id=row.reporter_id,
        reported_id=row.reported_id,
        type=cast(ReportType, row.type),
        reason=row.reason,
        status=cast(ReportStatus, row.status),
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        resolved_by=row.resolved_by,
        resolution_note=row.resolution_note,
        evidence=row.evidence,
    )


async def list_reports(
    session: AsyncSession,
    *,
    status: str | None,
    type_: str | None,
    reported_id: int | None,
    limit: int,
    cursor: str | None,
) -> schemas.AdminReportPage:
    """The queue, newest first, filtered by status, type and reported user."""
    query = _where_given(
        select(Report),
        (Report.status, status),
        (Report.type, type_),
        (Report.reported_id, reported_id),
    )
    rows = (await session.scalars(newest_first(query, Report.id, cursor, limit))).all()
    items = [_report(row) for row in rows[:limit]]
    return schemas.AdminReportPage(
        items=items, next_cursor=next_cursor([row.id for row in rows], limit)
    )


async def get_report(session: AsyncSession, *, report_id: int) -> schemas.AdminReportDetail:
    row = await session.get(Report, report_id)
    if row is None:
        raise NotFound("no such report")
    refs = [(int(ref["cid"]), int(ref["seq"])) for ref in (row.evidence or {}).get("messages", [])]
    found: dict[tuple[int, int], Any] = {}
    if refs:
        result = await session.execute(
            select(
                Message.conversation_id,
                Message.seq,
                Message.sender_id,
                Message.body,
                Message.created_at,
                Message.deleted_at,
            ).where(tuple_(Message.conversation_id, Message.seq).in_(refs))
        )
        found = {(m.conversation_id, m.seq): m for m in result}
    messages = []
    for cid, seq in refs:
        message = found.get((cid, seq))
        messages.append(
            schemas.EvidenceMessage(
                cid=cid,
                seq=seq,
                sender_id=message.sender_id if message else None,
                body=message.body if message else None,
                created_at=message.created_at if message else None,
            )
        )
    return schemas.AdminReportDetail(**_report(row).model_dump(), evidence_messages=messages)


async def resolve_report(
    session: AsyncSession,
    redis: Redis,
    *,
    admin_id: int,
    report_id: int,
    body: schemas.ResolveReportIn,
) -> schemas.AdminReport:
    """Dismiss, warn or ban; a warn or ban confirms the report (trust −10 to the reported)."""
    row = await session.scalar(select(Report).where(Report.id == report_id).with_for_update())
    if row is None:
        raise NotFound("no such report")
    if row.status != "pending":
        raise Conflict(f"the report is already {row.status}", code="report_resolved")
    status = {"dismiss": "dismissed", "warn": "warned", "ban": "banned"}[body.action]
    row.status = status
    row.resolved_at = dt.datetime.now(dt.UTC)
    row.resolved_by = admin_id
    row.resolution_note = body.note or None
    after: list[events.SafetyEvent] = []
    ban: tuple[int, dt.datetime] | None = None
    if body.action in ("warn", "ban"):
        await apply_trust(session, user_id=row.reported_id, reason="report_confirmed")
    if body.action == "warn":
        notice = await notifications.create(
            session,
            user_id=row.reported_id,
            kind="system",
            payload={"type": "warning", "report_type": row.type},
        )
        if notice is not None:
            after.append(notice)
    if body.action == "ban" and body.ban is not None:
        ban = await _ban(
            session,
            user_id=row.reported_id,
            spec=body.ban,
            reason=f"report {row.id}: {row.type}",
        )
    details: dict[str, Any] = {"resolution": body.action, "note": body.note}
    if body.ban is not None:
        details |= {"duration_s": body.ban.duration_s, "permanent": body.ban.permanent}
    audit(
        session,
        admin_id=admin_id,
        action=f"report.{body.action}",
        target_type="report",
        target_id=row.id,
        details=details | {"reported_id": row.reported_id},
    )
    out = _report(row)
    await session.commit()
    if ban is not None:
        await _after_ban(
            redis, row.reported_id, *ban, permanent=body.ban is not None and body.ban.permanent
        )
    if after:
        await publish_after_commit(redis, *after)
    return out


# --- users and bans ---------------------------------------------------------------------------


def _user_query() -> Select[User, str]:
    return select(User, Profile.display_name).outerjoin(Profile, Profile.user_id == User.id)


def _user_out(user: User, display_name: str | None) -> schemas.AdminUserOut:
    return schemas.AdminUserOut(
        id=user.id,
        email=user.email,
        display_name=display_name,
        is_admin=user.is_admin,
        is_active=user.is_active,
        banned_until=user.banned_until,
        banned_permanently=user.banned_until is not None and user.banned_until >= PERMANENT_BAN,
        ban_reason=user.ban_reason,
        trust_score=user.trust_score,
        created_at=user.created_at,
        last_active_at=user.last_active_at,
        deleted=user.deleted_at is not None,
    )


async def search_users(session: AsyncSession, *, q: str, limit: int) -> schemas.AdminUserList:
    """By exact id (digits) or email prefix, case-insensitive."""
    escaped = q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    condition: ColumnElement[bool] = func.lower(User.email).like(f"{escaped}%", escape="\\")
    if q.isdigit() and len(q) <= 18:
        condition = or_(condition, User.id == int(q))
    rows = (
        await session.execute(_user_query().where(condition).order_by(User.id).limit(limit))
    ).all()
    return schemas.AdminUserList(items=[_user_out(user, name) for user, name in rows])


async def get_user(session: AsyncSession, *, user_id: int) -> schemas.AdminUserOut:
    row = (await session.execute(_user_query().where(User.id == user_id))).first()
    if row is None:
        raise NotFound("no such user")
    return _user_out(row[0], row[1])


async def _ban(
    session: AsyncSession, *, user_id: int, spec: schemas.BanSpec, reason: str
) -> tuple[int, dt.datetime]:
    """Ban in the caller's transaction; returns (new token version, banned until)."""
    until = (
        PERMANENT_BAN
        if spec.permanent
        else dt.datetime.now(dt.UTC) + dt.timedelta(seconds=spec.duration_s or 0)
    )
    version = await session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(banned_until=until, ban_reason=reason[:500], token_version=User.token_version + 1)
        .returning(User.token_version)
    )
    if version is None:
        raise NotFound("no such user")
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )
    return int(version), until


async def _after_ban(
    redis: Redis, user_id: int, version: int, until: dt.datetime, *, permanent: bool
) -> None:
    """Old tokens die in both services; every node closes the user's sockets."""
    # On a Redis failure the nodes still get TokenBump and compare versions with PostgreSQL.
    with contextlib.suppress(RedisError, OSError):
        await set_token_version(redis, user_id, version)
    await publish_after_commit(
        redis,
        events.Ban(user=user_id, until=None if permanent else until.timestamp()),
        events.TokenBump(user=user_id, version=version),
    )


async def ban_user(
    session: AsyncSession, redis: Redis, *, admin_id: int, user_id: int, body: schemas.BanIn
) -> schemas.AdminUserOut:
    if user_id == admin_id:
        raise ApiError("you cannot ban yourself", code="invalid_target")
    version, until = await _ban(session, user_id=user_id, spec=body, reason=body.reason)
    audit(
        session,
        admin_id=admin_id,
        action="user.ban",
        target_type="user",
        target_id=user_id,
        details={"duration_s": body.duration_s, "permanent": body.permanent, "reason": body.reason},
    )
    await session.commit()
    await _after_ban(redis, user_id, version, until, permanent=body.permanent)
    return await get_user(session, user_id=user_id)


async def unban_user(session: AsyncSession, *, admin_id: int, user_id: int) -> schemas.AdminUserOut:
    """Lift a ban now; the user signs in again (their old tokens stay dead)."""
    updated = await session.scalar(
        update(User)
        .where(User.id == user_id)
        .values(banned_until=None, ban_reason=None)
        .returning(User.id)
    )
    if updated is None:
        raise NotFound("no such user")
    audit(session, admin_id=admin_id, action="user.unban", target_type="user", target_id=user_id)
    await session.commit()
    return await get_user(session, user_id=user_id)


# --- moderation words and log -----------------------------------------------------------------


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


async def list_words(session: AsyncSession, redis: Redis) -> schemas.WordList:
    rows = (await session.scalars(select(ModerationWord).order_by(ModerationWord.id))).all()
    matcher = await moderation.get_matcher(session, redis)
    return schemas.WordList(items=[_word(row) for row in rows], errors=matcher.errors)


async def create_word(
    session: AsyncSession, redis: Redis, *, admin_id: int, body: schemas.WordIn
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
    session: AsyncSession, redis: Redis, *, admin_id: int, word_id: int, body: schemas.WordPatch
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


async def delete_word(session: AsyncSession, redis: Redis, *, admin_id: int, word_id: int) -> None:
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


async def check(session: AsyncSession, redis: Redis, *, text: str) -> schemas.CheckOut:
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
    query = _where_given(
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


async def audit_log(
    session: AsyncSession,
    *,
    admin_id: int | None,
    action: str | None,
    target_type: str | None,
    target_id: int | None,
    limit: int,
    cursor: str | None,
) -> schemas.AuditPage:
    query = _where_given(
        select(AdminAuditLog),
        (AdminAuditLog.admin_id, admin_id),
        (AdminAuditLog.action, action),
        (AdminAuditLog.target_type, target_type),
        (AdminAuditLog.target_id, target_id),
    )
    rows = (await session.scalars(newest_first(query, AdminAuditLog.id, cursor, limit))).all()
    items = [
        schemas.AuditOut(
            id=row.id,
            admin_id=row.admin_id,
            action=row.action,
            target_type=row.target_type,
            target_id=row.target_id,
            details=row.details,
            created_at=row.created_at,
        )
        for row in rows[:limit]
    ]
    return schemas.AuditPage(items=items, next_cursor=next_cursor([row.id for row in rows], limit))

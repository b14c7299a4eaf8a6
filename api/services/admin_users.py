"""Admin user actions: search, read, ban and unban.

A ban sets ``banned_until`` (a far-future date for a permanent ban: NULL means "not banned"),
bumps the token version, revokes refresh tokens and, after the commit, writes the new version to
Redis and publishes ``Ban`` + ``TokenBump`` so the user's sockets close at once; ``CurrentUser``
refuses the user until the ban expires. ``admin_reports`` bans through the same two steps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Final

from sqlalchemy import ColumnElement, Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError, NotFound
from api.schemas import admin as schemas
from api.services.admin import audit
from api.services.matching import publish_after_commit
from common import events
from common.models import Profile, RefreshToken, User
from common.redisclient import RedisClient
from common.redisedge import REDIS_FAILURES
from common.rediskeys import set_token_version

#: What a permanent ban stores in ``banned_until`` (NULL already means "not banned").
PERMANENT_BAN: Final = dt.datetime(9999, 12, 31, tzinfo=dt.UTC)


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


async def apply_ban(
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


async def announce_ban(
    redis: RedisClient, user_id: int, version: int, until: dt.datetime, *, permanent: bool
) -> None:
    """Old tokens die in both services; every node closes the user's sockets."""
    # On a Redis failure the nodes still get TokenBump and compare versions with PostgreSQL.
    with contextlib.suppress(*REDIS_FAILURES):
        await set_token_version(redis, user_id, version)
    await publish_after_commit(
        redis,
        events.Ban(user=user_id, until=None if permanent else until.timestamp()),
        events.TokenBump(user=user_id, version=version),
    )


async def ban_user(
    session: AsyncSession, redis: RedisClient, *, admin_id: int, user_id: int, body: schemas.BanIn
) -> schemas.AdminUserOut:
    if user_id == admin_id:
        raise ApiError("you cannot ban yourself", code="invalid_target")
    version, until = await apply_ban(session, user_id=user_id, spec=body, reason=body.reason)
    audit(
        session,
        admin_id=admin_id,
        action="user.ban",
        target_type="user",
        target_id=user_id,
        details={"duration_s": body.duration_s, "permanent": body.permanent, "reason": body.reason},
    )
    await session.commit()
    await announce_ban(redis, user_id, version, until, permanent=body.permanent)
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

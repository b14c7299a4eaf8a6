"""Admin stats: counts from PostgreSQL and live connections from the nodes' heartbeats.

Read-only (nothing here is audited). Must not fail because Redis is away: the counts still help.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any, Final

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import admin as schemas
from common.cluster import live_nodes
from common.models import Match, Message, Report, User
from common.redisclient import RedisClient
from common.redisedge import REDIS_FAILURES
from common.settings import Settings

#: A node is listed as live while its heartbeat is younger than this many heartbeats.
STALE_HEARTBEATS: Final = 3


async def stats(session: AsyncSession, redis: RedisClient, settings: Settings) -> schemas.Stats:
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
    except REDIS_FAILURES:
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

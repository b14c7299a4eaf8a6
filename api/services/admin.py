"""The admin console's shared core: the audit trail, its log, and the filter helper.

Owns the audit trail: every admin mutation goes through :func:`audit`, in the same transaction
as the change, so an action and its audit row commit or vanish together. Reads are not audited.
The console's areas live beside it: ``admin_stats`` (counts and live nodes), ``admin_reports``
(the report queue and its resolution), ``admin_users`` (search, bans) and ``admin_moderation``
(the word list, the live check and the moderation log).

Must not: be reachable by a non-admin (every route takes ``AdminUser``), or publish before the
commit.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas import admin as schemas
from api.services.paging import newest_first, next_cursor
from common.models import AdminAuditLog


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


def where_given(query: Select[Any], *filters: tuple[Any, object | None]) -> Select[Any]:
    """``query`` narrowed by ``column == value`` for every filter whose value was given."""
    for column, value in filters:
        if value is not None:
            query = query.where(column == value)
    return query


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
    query = where_given(
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

"""The report queue: list, read with its evidence messages, and resolve (dismiss, warn, ban).

A warn or ban confirms the report: trust −10 to the reported user, a warning notification or a
ban (through ``admin_users``), and one audit row, all in one transaction; notifications and ban
events are published only after the commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import Conflict, NotFound
from api.schemas import admin as schemas
from api.schemas.safety import ReportStatus, ReportType
from api.services import notifications
from api.services.admin import audit, where_given
from api.services.admin_users import announce_ban, apply_ban
from api.services.matching import publish_after_commit
from api.services.paging import newest_first, next_cursor
from api.services.trust import apply_trust
from common import events
from common.models import Message, Report
from common.redisclient import RedisClient


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
    query = where_given(
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
    redis: RedisClient,
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
        ban = await apply_ban(
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
        await announce_ban(
            redis, row.reported_id, *ban, permanent=body.ban is not None and body.ban.permanent
        )
    if after:
        await publish_after_commit(redis, *after)
    return out

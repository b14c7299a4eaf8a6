"""The admin console: every route takes ``AdminUser`` (the flag re-read from the database).

A test walks the app's route table and checks that a non-admin gets 403 on every route under
``/api/admin``, so a new route cannot forget the dependency. Logic lives in
``api/services/admin*.py``; every mutation is audited through ``admin.audit``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import AdminUser, RedisDep, SessionDep, SettingsDep
from api.schemas import admin as schemas
from api.schemas.discovery import CURSOR_MAX_CHARS
from api.schemas.matches import BIGINT_MAX
from api.schemas.safety import ReportStatus, ReportType
from api.services import admin as admin_audit
from api.services import admin_moderation, admin_reports, admin_stats, admin_users

router = APIRouter(prefix="/api/admin", tags=["admin"])

ObjectId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
#: ``moderation_words.id`` is a 32-bit integer: a larger id is a 422, not a database error.
WordId = Annotated[int, Path(ge=1, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=schemas.ADMIN_PAGE_MAX)]
Cursor = Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)]
OptionalId = Annotated[int | None, Query(ge=1, le=BIGINT_MAX)]
Filter = Annotated[str | None, Query(max_length=64)]


@router.get("/stats", response_model=schemas.Stats)
async def stats(
    admin: AdminUser, session: SessionDep, redis: RedisDep, settings: SettingsDep
) -> schemas.Stats:
    """Users, activity, bans, matches, today's messages, pending reports and live connections."""
    return await admin_stats.stats(session, redis, settings)


@router.get("/reports", response_model=schemas.AdminReportPage)
async def list_reports(
    admin: AdminUser,
    session: SessionDep,
    status: ReportStatus | None = None,
    type: ReportType | None = None,
    reported_id: OptionalId = None,
    limit: Limit = schemas.ADMIN_PAGE_DEFAULT,
    cursor: Cursor = None,
) -> schemas.AdminReportPage:
    """The report queue, newest first, filtered by status, type or reported user."""
    return await admin_reports.list_reports(
        session, status=status, type_=type, reported_id=reported_id, limit=limit, cursor=cursor
    )


@router.get("/reports/{report_id}", response_model=schemas.AdminReportDetail)
async def get_report(
    report_id: ObjectId, admin: AdminUser, session: SessionDep
) -> schemas.AdminReportDetail:
    """One report with the messages its evidence points at."""
    return await admin_reports.get_report(session, report_id=report_id)


@router.post("/reports/{report_id}/resolve", response_model=schemas.AdminReport)
async def resolve_report(
    report_id: ObjectId,
    body: schemas.ResolveReportIn,
    admin: AdminUser,
    session: SessionDep,
    redis: RedisDep,
) -> schemas.AdminReport:
    """Resolve a pending report: dismiss it, warn the user, or ban them (timed or permanent)."""
    return await admin_reports.resolve_report(
        session, redis, admin_id=admin.id, report_id=report_id, body=body
    )


@router.get("/users", response_model=schemas.AdminUserList)
async def search_users(
    admin: AdminUser,
    session: SessionDep,
    q: Annotated[str, Query(min_length=1, max_length=254)],
    limit: Limit = schemas.ADMIN_PAGE_DEFAULT,
) -> schemas.AdminUserList:
    """Find users by id or by the start of their email."""
    return await admin_users.search_users(session, q=q, limit=limit)


@router.get("/users/{user_id}", response_model=schemas.AdminUserOut)
async def get_user(
    user_id: ObjectId, admin: AdminUser, session: SessionDep
) -> schemas.AdminUserOut:
    """One user's account state."""
    return await admin_users.get_user(session, user_id=user_id)


@router.post("/users/{user_id}/ban", response_model=schemas.AdminUserOut)
async def ban_user(
    user_id: ObjectId,
    body: schemas.BanIn,
    admin: AdminUser,
    session: SessionDep,
    redis: RedisDep,
) -> schemas.AdminUserOut:
    """Ban a user for a duration or for good; their sessions and sockets end at once."""
    return await admin_users.ban_user(session, redis, admin_id=admin.id, user_id=user_id, body=body)


@router.post("/users/{user_id}/unban", response_model=schemas.AdminUserOut)
async def unban_user(
    user_id: ObjectId, admin: AdminUser, session: SessionDep
) -> schemas.AdminUserOut:
    """Lift a user's ban now."""
    return await admin_users.unban_user(session, admin_id=admin.id, user_id=user_id)


@router.get("/moderation/words", response_model=schemas.WordList)
async def list_words(admin: AdminUser, session: SessionDep, redis: RedisDep) -> schemas.WordList:
    """The content filter's words, phrases, regexes and detector settings."""
    return await admin_moderation.list_words(session, redis)


@router.post("/moderation/words", response_model=schemas.WordOut, status_code=201)
async def create_word(
    body: schemas.WordIn, admin: AdminUser, session: SessionDep, redis: RedisDep
) -> schemas.WordOut:
    """Add a word, phrase, regex or detector setting; every node reloads the filter."""
    return await admin_moderation.create_word(session, redis, admin_id=admin.id, body=body)


@router.patch("/moderation/words/{word_id}", response_model=schemas.WordOut)
async def update_word(
    word_id: WordId,
    body: schemas.WordPatch,
    admin: AdminUser,
    session: SessionDep,
    redis: RedisDep,
) -> schemas.WordOut:
    """Change a filter entry; every node reloads the filter."""
    return await admin_moderation.update_word(
        session, redis, admin_id=admin.id, word_id=word_id, body=body
    )


@router.delete("/moderation/words/{word_id}", status_code=204, response_class=Response)
async def delete_word(
    word_id: WordId, admin: AdminUser, session: SessionDep, redis: RedisDep
) -> Response:
    """Remove a filter entry; every node reloads the filter."""
    await admin_moderation.delete_word(session, redis, admin_id=admin.id, word_id=word_id)
    return Response(status_code=204)


@router.post("/moderation/check", response_model=schemas.CheckOut)
async def check_text(
    body: schemas.CheckIn, admin: AdminUser, session: SessionDep, redis: RedisDep
) -> schemas.CheckOut:
    """Try the live content filter on a text without logging anything."""
    return await admin_moderation.check(session, redis, text=body.text)


@router.get("/moderation/log", response_model=schemas.ModerationLogPage)
async def moderation_log(
    admin: AdminUser,
    session: SessionDep,
    user_id: OptionalId = None,
    category: Filter = None,
    action: Annotated[schemas.ModerationAction | None, Query()] = None,
    source: Filter = None,
    limit: Limit = schemas.ADMIN_PAGE_DEFAULT,
    cursor: Cursor = None,
) -> schemas.ModerationLogPage:
    """What the content filter warned about or rejected, newest first."""
    return await admin_moderation.moderation_log(
        session,
        user_id=user_id,
        category=category,
        action=action,
        source=source,
        limit=limit,
        cursor=cursor,
    )


@router.get("/audit", response_model=schemas.AuditPage)
async def audit_log(
    admin: AdminUser,
    session: SessionDep,
    admin_id: OptionalId = None,
    action: Filter = None,
    target_type: Filter = None,
    target_id: OptionalId = None,
    limit: Limit = schemas.ADMIN_PAGE_DEFAULT,
    cursor: Cursor = None,
) -> schemas.AuditPage:
    """Every admin action (who, what, when, target), newest first."""
    return await admin_audit.audit_log(
        session,
        admin_id=admin_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        limit=limit,
        cursor=cursor,
    )

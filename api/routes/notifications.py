"""Your notifications: a page by cursor, the unread count, read marks and deletion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import CurrentUser, SessionDep
from api.schemas.discovery import CURSOR_MAX_CHARS
from api.schemas.matches import BIGINT_MAX
from api.schemas.notifications import (
    NOTIFICATIONS_PAGE_DEFAULT,
    NOTIFICATIONS_PAGE_MAX,
    MarkedRead,
    NotificationOut,
    NotificationPage,
    UnreadCount,
)
from api.services import notifications as service

router = APIRouter(prefix="/api/notifications", tags=["notifications"])

NotificationId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]


@router.get("", response_model=NotificationPage)
async def list_notifications(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=NOTIFICATIONS_PAGE_MAX)] = NOTIFICATIONS_PAGE_DEFAULT,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
    unread_only: bool = False,
) -> NotificationPage:
    """Your notifications, newest first; pass ``next_cursor`` back for the next page."""
    return await service.list_page(
        session, user_id=user.id, limit=limit, cursor=cursor, unread_only=unread_only
    )


@router.get("/unread-count", response_model=UnreadCount)
async def unread_count(user: CurrentUser, session: SessionDep) -> UnreadCount:
    """How many of your notifications are unread."""
    return await service.unread_count(session, user_id=user.id)


@router.post("/read-all", response_model=MarkedRead)
async def mark_all_read(user: CurrentUser, session: SessionDep) -> MarkedRead:
    """Mark all your notifications read."""
    return await service.mark_all_read(session, user_id=user.id)


@router.post("/{notification_id}/read", response_model=NotificationOut)
async def mark_read(
    notification_id: NotificationId, user: CurrentUser, session: SessionDep
) -> NotificationOut:
    """Mark one of your notifications read."""
    return await service.mark_read(session, user_id=user.id, notification_id=notification_id)


@router.delete("/{notification_id}", status_code=204, response_class=Response)
async def delete_notification(
    notification_id: NotificationId, user: CurrentUser, session: SessionDep
) -> Response:
    """Delete one of your notifications."""
    await service.remove(session, user_id=user.id, notification_id=notification_id)
    return Response(status_code=204)

"""Wire models of notifications: a page by cursor, the unread count, read marks."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel

NOTIFICATIONS_PAGE_DEFAULT: Final = 20
NOTIFICATIONS_PAGE_MAX: Final = 100

#: The one vocabulary of ``notifications.kind`` (and of ``Notify.kind`` on the safety stream):
#: ``match`` a new match, ``like`` a new like, ``message`` a message received while offline,
#: ``system`` a notice from the team (a moderation warning, ...).
NotificationKind = Literal["match", "like", "message", "system"]
NOTIFICATION_KINDS: Final[tuple[str, ...]] = get_args(NotificationKind)


class NotificationOut(BaseModel):
    id: int
    #: One of :data:`NotificationKind`.
    kind: NotificationKind
    payload: dict[str, Any]
    created_at: dt.datetime
    read_at: dt.datetime | None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


class UnreadCount(BaseModel):
    unread: int


class MarkedRead(BaseModel):
    updated: int

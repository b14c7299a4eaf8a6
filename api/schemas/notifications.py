"""Wire models of notifications: a page by cursor, the unread count, read marks."""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from pydantic import BaseModel

NOTIFICATIONS_PAGE_DEFAULT: Final = 20
NOTIFICATIONS_PAGE_MAX: Final = 100


class NotificationOut(BaseModel):
    id: int
    kind: str
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

"""Persisted notifications: creating them (block-aware), listing, read marks, deletion.

Owns the ``notifications`` table for every area. Convention: ``payload["user_id"]`` names the
other person a notification is about (the liker, the match, the sender); a block between the
recipient and that person means the notification is not created, not listed and, at the block,
deleted. Creation joins the caller's transaction; the caller commits, then calls
:func:`push` so connected clients get it live (``Notify`` on the safety stream).

``message`` notifications are written by the realtime nodes (``realtime/notices.py``), for
recipients with no socket on any node: one unread row per (recipient, conversation), payload
``{"user_id": sender, "conversation_id", "count", "seq"}`` (a partial unique index keeps it one).
Here they are only read, marked read by the REST read mark (:func:`read_messages`) and, with
an unmatch or a block, deleted; one of a closed conversation is never listed (a node's upsert
can race the unmatch that deletes them).

Must not: commit on behalf of a caller's transaction, or publish before the commit.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import BigInteger, ColumnElement, delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import NotFound
from api.schemas.notifications import (
    MarkedRead,
    NotificationKind,
    NotificationOut,
    NotificationPage,
    UnreadCount,
)
from api.services.matching import MESSAGE_NOTIFICATION as MESSAGE
from api.services.matching import publish_after_commit
from api.services.paging import newest_first, next_cursor
from api.services.relations import blocked_between, is_blocked_between
from common import events
from common.models import Conversation, Notification
from common.redisclient import RedisClient


def _about() -> ColumnElement[int]:
    """The person a notification row is about (NULL when it names nobody)."""
    about: ColumnElement[int] = Notification.payload["user_id"].astext.cast(BigInteger)
    return about


def conversation_of() -> ColumnElement[int]:
    """The conversation a ``message`` notification row is about."""
    cid: ColumnElement[int] = Notification.payload["conversation_id"].astext.cast(BigInteger)
    return cid


def _visible(user_id: int) -> ColumnElement[bool]:
    open_conversation = exists().where(
        Conversation.id == conversation_of(), Conversation.closed_at.is_(None)
    )
    return (
        (Notification.user_id == user_id)
        & ~blocked_between(user_id, _about())
        & ((Notification.kind != MESSAGE) | open_conversation)
    )


async def create(
    session: AsyncSession,
    *,
    user_id: int,
    kind: NotificationKind,
    payload: dict[str, Any] | None = None,
    about_user_id: int | None = None,
) -> events.Notify | None:
    """Add a notification in the caller's transaction; returns the event to :func:`push` after
    the commit, or None when a block between ``user_id`` and ``about_user_id`` forbids it."""
    body = dict(payload or {})
    if about_user_id is not None:
        if await is_blocked_between(session, user_id, about_user_id):
            return None
        body["user_id"] = about_user_id
    notification_id = await session.scalar(
        insert(Notification)
        .values(user_id=user_id, kind=kind, payload=body)
        .returning(Notification.id)
    )
    assert notification_id is not None
    return events.Notify(user=user_id, id=notification_id, kind=kind, payload=body)


async def push(redis: RedisClient, *created: events.Notify | None) -> None:
    """Publish created notifications for live delivery; call after the commit."""
    ready = [item for item in created if item is not None]
    if ready:
        await publish_after_commit(redis, *ready)


async def forget_between(session: AsyncSession, a: int, b: int) -> None:
    """Delete what each of ``a`` and ``b`` was notified about the other (at a block)."""
    await session.execute(
        delete(Notification).where(
            ((Notification.user_id == a) & (_about() == b))
            | ((Notification.user_id == b) & (_about() == a))
        )
    )


async def read_messages(
    session: AsyncSession, *, user_id: int, conversation_id: int, seq: int
) -> None:
    """In the caller's transaction: the conversation's unread ``message`` notification is read
    once the read mark ``seq`` covers its newest message (as a receipt on a socket does)."""
    newest = Notification.payload["seq"].astext.cast(BigInteger)
    await session.execute(
        update(Notification)
        .where(
            Notification.user_id == user_id,
            Notification.kind == MESSAGE,
            Notification.read_at.is_(None),
            conversation_of() == conversation_id,
            newest <= seq,
        )
        .values(read_at=func.now())
    )


def _out(row: Notification) -> NotificationOut:
    return NotificationOut(
        id=row.id,
        kind=cast(NotificationKind, row.kind),  # every writer takes a NotificationKind
        payload=row.payload,
        created_at=row.created_at,
        read_at=row.read_at,
    )


async def list_page(
    session: AsyncSession,
    *,
    user_id: int,
    limit: int,
    cursor: str | None,
    unread_only: bool = False,
) -> NotificationPage:
    """Newest first; ``next_cursor`` continues after the last item."""
    query = select(Notification).where(_visible(user_id))
    if unread_only:
        query = query.where(Notification.read_at.is_(None))
    rows = (await session.scalars(newest_first(query, Notification.id, cursor, limit))).all()
    return NotificationPage(
        items=[_out(row) for row in rows[:limit]],
        next_cursor=next_cursor([row.id for row in rows], limit),
    )


async def unread_count(session: AsyncSession, *, user_id: int) -> UnreadCount:
    count = await session.scalar(
        select(func.count())
        .select_from(Notification)
        .where(_visible(user_id), Notification.read_at.is_(None))
    )
    return UnreadCount(unread=int(count or 0))


async def mark_read(
    session: AsyncSession, *, user_id: int, notification_id: int
) -> NotificationOut:
    """Mark one notification read (again is harmless); someone else's answers 404."""
    row = await session.scalar(
        update(Notification)
        .where(Notification.id == notification_id, _visible(user_id))
        .values(read_at=func.coalesce(Notification.read_at, func.now()))
        .returning(Notification)
    )
    if row is None:
        raise NotFound("no such notification")
    out = _out(row)
    await session.commit()
    return out


async def mark_all_read(session: AsyncSession, *, user_id: int) -> MarkedRead:
    result = await session.execute(
        update(Notification)
        .where(Notification.user_id == user_id, Notification.read_at.is_(None))
        .values(read_at=func.now())
        .returning(Notification.id)
    )
    updated = len(result.all())
    await session.commit()
    return MarkedRead(updated=updated)


async def remove(session: AsyncSession, *, user_id: int, notification_id: int) -> None:
    deleted = await session.scalar(
        delete(Notification)
        .where(Notification.id == notification_id, Notification.user_id == user_id)
        .returning(Notification.id)
    )
    if deleted is None:
        raise NotFound("no such notification")
    await session.commit()

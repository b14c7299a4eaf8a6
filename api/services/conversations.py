"""Conversations on the REST side: the caller's list, history by ``seq``, read state, deletion.

Owns who may read a conversation over REST: a member, of an open conversation (``closed_at``
null: unmatch and block close it), whose other member is not blocked either way. Anything else
answers 404 exactly like a conversation that does not exist.

History is deliberately one simple statement that the realtime ``sync`` shares in meaning:

    SELECT ... FROM messages WHERE conversation_id = :cid AND seq > :after ORDER BY seq LIMIT n
    SELECT ... FROM messages WHERE conversation_id = :cid AND seq < :before ORDER BY seq DESC ...

both served by the primary key ``(conversation_id, seq)``. A deleted message keeps its ``seq``
(the order stays gapless) but its body is never returned.

Unread counts follow one rule: ``unread_count`` is the number of messages after
``last_read_seq`` that others sent and that are not deleted, counted when read
(``common.models.ConversationMember.unread_count``; nothing stores it). Read marks lock the
conversation row first, as the realtime batch writer does, so a concurrent send cannot slip
between reading ``last_seq`` and moving the mark.

Must not: send messages (the realtime server owns sends and ``seq``), or publish before commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from api.errors import NotFound
from api.schemas.conversations import (
    ConversationItem,
    ConversationPage,
    HistoryPage,
    MessageOut,
    ReadState,
)
from api.schemas.discovery import InvalidCursor, decode_cursor, encode_cursor
from api.services import notifications
from api.services.matching import (
    CARD_COLUMNS,
    LAST_MESSAGE,
    PREVIEW_COLUMNS,
    last_message,
    public_card,
    publish_after_commit,
)
from api.services.relations import blocked_between
from common import events
from common.models import Conversation, ConversationMember, Message, Profile, User, top_seq
from common.redisclient import RedisClient

_NOT_FOUND = "no such conversation"


def _open_membership(user_id: int, conversation_id: int, *, lock: bool) -> Any:
    """The caller's membership row, the conversation and the other member, if readable."""
    me = aliased(ConversationMember)
    other = aliased(ConversationMember)
    query = (
        select(
            me.last_read_seq,
            other.user_id.label("other_id"),
        )
        .select_from(Conversation)
        .join(me, and_(me.conversation_id == Conversation.id, me.user_id == user_id))
        .join(other, and_(other.conversation_id == Conversation.id, other.user_id != user_id))
        .where(
            Conversation.id == conversation_id,
            Conversation.closed_at.is_(None),
            ~blocked_between(user_id, other.user_id.expression),
        )
    )
    if lock:
        # Only the conversation row: the same lock, in the same order, as the realtime writer.
        query = query.with_for_update(of=Conversation)
    return query


async def _membership(
    session: AsyncSession, *, user_id: int, conversation_id: int, lock: bool = False
) -> Any:
    row = (await session.execute(_open_membership(user_id, conversation_id, lock=lock))).first()
    if row is None:
        raise NotFound(_NOT_FOUND)
    return row


async def list_conversations(
    session: AsyncSession, *, user_id: int, cursor: str | None, limit: int
) -> ConversationPage:
    """The caller's open conversations, most recent activity first, in one statement."""
    me = aliased(ConversationMember)
    other = aliased(ConversationMember)
    activity = func.coalesce(Conversation.last_message_at, Conversation.created_at)
    query = (
        select(
            Conversation.id.label("conversation_id"),
            Conversation.last_seq,
            Conversation.last_message_at,
            activity.label("activity"),
            me.last_read_seq,
            me.unread_count,
            *CARD_COLUMNS,
            *PREVIEW_COLUMNS,
        )
        .select_from(me)
        .join(Conversation, Conversation.id == me.conversation_id)
        .join(other, and_(other.conversation_id == Conversation.id, other.user_id != user_id))
        .join(Profile, Profile.user_id == other.user_id)
        .join(User, User.id == other.user_id)
        .outerjoin(Message, LAST_MESSAGE)
        .where(
            me.user_id == user_id,
            Conversation.closed_at.is_(None),
            User.deleted_at.is_(None),
            ~blocked_between(user_id, other.user_id.expression),
        )
        .order_by(activity.desc(), Conversation.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        at, last_id = decode_cursor(cursor, (str, int))
        try:
            last_at = dt.datetime.fromisoformat(str(at))
        except ValueError as exc:
            raise InvalidCursor("cursor is not one this API issued") from exc
        query = query.where(tuple_(activity, Conversation.id) < tuple_(last_at, last_id))
    rows = (await session.execute(query)).all()
    items = [
        ConversationItem(
            conversation_id=row.conversation_id,
            user=public_card(row),
            last_seq=row.last_seq,
            last_message_at=row.last_message_at,
            last_read_seq=row.last_read_seq,
            unread_count=row.unread_count,
            last_message=last_message(row),
        )
        for row in rows[:limit]
    ]
    next_cursor = None
    if len(rows) > limit:
        last = rows[limit - 1]
        next_cursor = encode_cursor([last.activity.isoformat(), last.conversation_id])
    return ConversationPage(items=items, next_cursor=next_cursor)


async def history(
    session: AsyncSession,
    *,
    user_id: int,
    conversation_id: int,
    before: int | None,
    after: int | None,
    limit: int,
) -> HistoryPage:
    """Up to ``limit`` messages after ``after``, or before ``before`` (default: the newest)."""
    if before is not None and after is not None:
        raise InvalidCursor("give before or after, not both")
    await _membership(session, user_id=user_id, conversation_id=conversation_id)
    query = select(Message).where(Message.conversation_id == conversation_id).limit(limit + 1)
    if after is not None:
        query = query.where(Message.seq > after).order_by(Message.seq)
    else:
        if before is not None:
            query = query.where(Message.seq < before)
        query = query.order_by(Message.seq.desc())
    messages = list((await session.scalars(query)).all())
    has_more = len(messages) > limit
    messages = messages[:limit]
    if after is None:
        messages.reverse()
    return HistoryPage(messages=[_message_out(message) for message in messages], has_more=has_more)


def _message_out(message: Message) -> MessageOut:
    deleted = message.deleted_at is not None
    return MessageOut(
        id=message.id,
        seq=message.seq,
        sender_id=message.sender_id,
        cmid=message.cmid,
        body=None if deleted else message.body,
        kind=message.kind,
        created_at=message.created_at,
        deleted=deleted,
    )


async def mark_read(
    session: AsyncSession, redis: RedisClient, *, user_id: int, conversation_id: int, seq: int
) -> ReadState:
    """Move the caller's read mark up to ``seq`` (never back, never past the last message)."""
    row = await _membership(session, user_id=user_id, conversation_id=conversation_id, lock=True)
    # A statement of its own after the lock, so the top seq includes any send that committed
    # while this request waited for the lock (see common.models.top_seq).
    state = (
        await session.execute(
            update(ConversationMember)
            .where(
                ConversationMember.conversation_id == conversation_id,
                ConversationMember.user_id == user_id,
            )
            .values(
                last_read_seq=func.greatest(
                    ConversationMember.last_read_seq, func.least(seq, top_seq(conversation_id))
                )
            )
            .returning(ConversationMember.last_read_seq, ConversationMember.unread_count)
        )
    ).one()
    await notifications.read_messages(
        session, user_id=user_id, conversation_id=conversation_id, seq=state.last_read_seq
    )
    await session.commit()
    if state.last_read_seq > row.last_read_seq:
        await publish_after_commit(
            redis, events.ReadUpTo(cid=conversation_id, user=user_id, seq=state.last_read_seq)
        )
    return ReadState(
        conversation_id=conversation_id,
        last_read_seq=state.last_read_seq,
        unread_count=state.unread_count,
    )


async def delete_message(
    session: AsyncSession, redis: RedisClient, *, user_id: int, conversation_id: int, seq: int
) -> None:
    """Soft-delete the caller's own message ``seq``; another's answers 404 like a missing one."""
    row = await _membership(session, user_id=user_id, conversation_id=conversation_id, lock=True)
    message = (
        await session.execute(
            select(Message.deleted_at).where(
                Message.conversation_id == conversation_id,
                Message.seq == seq,
                Message.sender_id == user_id,
            )
        )
    ).first()
    if message is None:
        raise NotFound("no such message")
    if message.deleted_at is not None:
        return  # already deleted: idempotent, nothing new to tell anyone
    await session.execute(
        update(Message)
        .where(Message.conversation_id == conversation_id, Message.seq == seq)
        .values(deleted_at=func.now())
    )
    await session.commit()
    await publish_after_commit(
        redis,
        events.MessageDeleted(cid=conversation_id, seq=seq, users=(user_id, row.other_id)),
    )

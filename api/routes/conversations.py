"""Conversations over REST: list, history by seq, mark read, delete one's own message."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import CurrentUser, RedisDep, SessionDep
from api.schemas.conversations import (
    CONVERSATIONS_PAGE_DEFAULT,
    CONVERSATIONS_PAGE_MAX,
    HISTORY_PAGE_DEFAULT,
    HISTORY_PAGE_MAX,
    ConversationPage,
    HistoryPage,
    ReadIn,
    ReadState,
)
from api.schemas.discovery import CURSOR_MAX_CHARS
from api.schemas.matches import BIGINT_MAX
from api.services import conversations as service

router = APIRouter(prefix="/api", tags=["conversations"])

ConversationId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
SeqQuery = Annotated[int | None, Query(ge=0, le=BIGINT_MAX)]


@router.get("/conversations", response_model=ConversationPage)
async def list_conversations(
    user: CurrentUser,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=CONVERSATIONS_PAGE_MAX)] = CONVERSATIONS_PAGE_DEFAULT,
) -> ConversationPage:
    """Your open conversations, most recent activity first, with unread counts."""
    return await service.list_conversations(session, user_id=user.id, cursor=cursor, limit=limit)


@router.get("/conversations/{cid}/messages", response_model=HistoryPage)
async def history(
    cid: ConversationId,
    user: CurrentUser,
    session: SessionDep,
    before: SeqQuery = None,
    after: SeqQuery = None,
    limit: Annotated[int, Query(ge=1, le=HISTORY_PAGE_MAX)] = HISTORY_PAGE_DEFAULT,
) -> HistoryPage:
    """Messages of one of your conversations in seq order, before or after a seq, else latest."""
    return await service.history(
        session, user_id=user.id, conversation_id=cid, before=before, after=after, limit=limit
    )


@router.post("/conversations/{cid}/read", response_model=ReadState)
async def mark_read(
    cid: ConversationId,
    body: ReadIn,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
) -> ReadState:
    """Mark a conversation read up to a seq; the mark never moves back."""
    return await service.mark_read(
        session, redis, user_id=user.id, conversation_id=cid, seq=body.seq
    )


@router.delete("/conversations/{cid}/messages/{seq}", status_code=204, response_class=Response)
async def delete_message(
    cid: ConversationId,
    seq: Annotated[int, Path(ge=1, le=BIGINT_MAX)],
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
) -> Response:
    """Delete one of your own messages: its text disappears for both of you."""
    await service.delete_message(session, redis, user_id=user.id, conversation_id=cid, seq=seq)
    return Response(status_code=204)

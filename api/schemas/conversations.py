"""Wire models of conversations, message history, read state and deletion."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final

from pydantic import BaseModel, ConfigDict, Field

from api.schemas.matches import BIGINT_MAX, LastMessage, PublicCard

CONVERSATIONS_PAGE_DEFAULT: Final = 20
CONVERSATIONS_PAGE_MAX: Final = 100
HISTORY_PAGE_DEFAULT: Final = 50
HISTORY_PAGE_MAX: Final = 200

Seq = Annotated[int, Field(ge=0, le=BIGINT_MAX)]


class ConversationItem(BaseModel):
    conversation_id: int
    user: PublicCard
    last_seq: int
    last_message_at: dt.datetime | None
    last_read_seq: int
    unread_count: int
    last_message: LastMessage | None


class ConversationPage(BaseModel):
    items: list[ConversationItem]
    next_cursor: str | None


class MessageOut(BaseModel):
    """One message as both REST history and realtime ``sync`` present it."""

    id: int
    seq: int
    sender_id: int
    #: The client-made id, as realtime ``msg`` frames carry it (clients dedupe by it).
    cmid: str
    #: Null when the message was deleted.
    body: str | None
    kind: str
    created_at: dt.datetime
    deleted: bool


class HistoryPage(BaseModel):
    """Messages in ascending ``seq``; ``has_more`` says whether the same direction has more."""

    messages: list[MessageOut]
    has_more: bool


class ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: Seq


class ReadState(BaseModel):
    conversation_id: int
    last_read_seq: int
    unread_count: int

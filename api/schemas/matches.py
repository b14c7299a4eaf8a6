"""Wire models of likes, passes, matches and the public card of the other person."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

MATCHES_PAGE_DEFAULT: Final = 20
MATCHES_PAGE_MAX: Final = 100
#: Ids are PostgreSQL bigints; larger numbers are refused before they reach SQL.
BIGINT_MAX: Final = 2**63 - 1

Id = Annotated[int, Field(ge=1, le=BIGINT_MAX)]


class SwipeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_id: Id


class SwipeResult(BaseModel):
    target_id: int
    kind: Literal["like", "pass"]
    matched: bool
    match_id: int | None = None
    conversation_id: int | None = None


class LikesReceived(BaseModel):
    """How many people liked you that you have not answered yet."""

    count: int


class PublicCard(BaseModel):
    """What a match or conversation shows of the other person."""

    user_id: int
    display_name: str
    age: int
    photo_thumb: str | None


class LastMessage(BaseModel):
    seq: int
    sender_id: int
    #: Null when the message was deleted.
    body: str | None
    kind: str
    created_at: dt.datetime
    deleted: bool


class MatchItem(BaseModel):
    match_id: int
    conversation_id: int
    matched_at: dt.datetime
    user: PublicCard
    last_message: LastMessage | None
    unread_count: int


class MatchPage(BaseModel):
    items: list[MatchItem]
    next_cursor: str | None

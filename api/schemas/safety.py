"""Wire models of blocks and reports: what a user may send and what they see back.

A block list names the other person by id and display name only (never an email); a user sees
their own reports' status but not the moderators' notes.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.schemas.matches import BIGINT_MAX, Id

REASON_MIN_CHARS: Final = 10
REASON_MAX_CHARS: Final = 1000
EVIDENCE_MAX_MESSAGES: Final = 20

ReportType = Literal["inappropriate_content", "harassment", "fake_profile", "scam", "other"]
ReportStatus = Literal["pending", "dismissed", "warned", "banned"]


class BlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id


class BlockOut(BaseModel):
    user_id: int
    display_name: str | None
    blocked_at: dt.datetime


class BlockList(BaseModel):
    items: list[BlockOut]


class MessageRef(BaseModel):
    """One message of a conversation you are in, by conversation id and sequence number."""

    model_config = ConfigDict(extra="forbid")

    cid: Id
    seq: Annotated[int, Field(ge=1, le=BIGINT_MAX)]


class ReportEvidence(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: Annotated[list[MessageRef], Field(max_length=EVIDENCE_MAX_MESSAGES)] = []


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: Id
    type: ReportType
    reason: Annotated[
        str,
        StringConstraints(
            strip_whitespace=True, min_length=REASON_MIN_CHARS, max_length=REASON_MAX_CHARS
        ),
    ]
    evidence: ReportEvidence | None = None


class ReportOut(BaseModel):
    id: int
    user_id: int
    type: ReportType
    status: ReportStatus
    created_at: dt.datetime
    resolved_at: dt.datetime | None


class ReportList(BaseModel):
    items: list[ReportOut]

"""Wire models of the admin console: stats, report queue, users, bans, words, logs.

Admins see emails (they run the service); they never see password hashes or tokens.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from api.schemas.safety import ReportStatus, ReportType

ADMIN_PAGE_DEFAULT: Final = 50
ADMIN_PAGE_MAX: Final = 200
#: Longest timed ban; longer is a permanent ban.
BAN_MAX_S: Final = 10 * 365 * 24 * 3600

Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=1000)]


class NodeStats(BaseModel):
    id: str
    address: str
    connections: int
    users: int
    started_at: float
    heartbeat_age_s: float


class Stats(BaseModel):
    users: int
    active_24h: int
    banned: int
    matches: int
    messages_today: int
    pending_reports: int
    live_connections: int
    nodes: list[NodeStats]


class EvidenceMessage(BaseModel):
    cid: int
    seq: int
    sender_id: int | None
    body: str | None
    created_at: dt.datetime | None


class AdminReport(BaseModel):
    id: int
    reporter_id: int
    reported_id: int
    type: ReportType
    reason: str
    status: ReportStatus
    created_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: int | None
    resolution_note: str | None
    evidence: dict[str, Any] | None


class AdminReportDetail(AdminReport):
    #: The referenced messages as stored (an admin reviewing a report reads them).
    evidence_messages: list[EvidenceMessage]


class AdminReportPage(BaseModel):
    items: list[AdminReport]
    next_cursor: str | None


class BanSpec(BaseModel):
    """A timed ban (``duration_s``) or a permanent one (``permanent: true``), never both."""

    model_config = ConfigDict(extra="forbid")

    duration_s: Annotated[int, Field(ge=1, le=BAN_MAX_S)] | None = None
    permanent: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> BanSpec:
        if self.permanent == (self.duration_s is not None):
            raise ValueError("give either duration_s or permanent: true")
        return self


class ResolveReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Literal["dismiss", "warn", "ban"]
    note: Note = ""
    ban: BanSpec | None = None

    @model_validator(mode="after")
    def _ban_needs_spec(self) -> ResolveReportIn:
        if (self.action == "ban") != (self.ban is not None):
            raise ValueError("a ban resolution needs 'ban', and only a ban resolution has it")
        return self


class BanIn(BanSpec):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class AdminUserOut(BaseModel):
    id: int
    email: str
    display_name: str | None
    is_admin: bool
    is_active: bool
    banned_until: dt.datetime | None
    banned_permanently: bool
    ban_reason: str | None
    trust_score: int
    created_at: dt.datetime
    last_active_at: dt.datetime
    deleted: bool


class AdminUserList(BaseModel):
    items: list[AdminUserOut]


ModerationAction = Literal["warn", "reject"]
Category = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$"),
]
Pattern = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class WordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: Pattern
    is_regex: bool = False
    category: Category
    severity: Annotated[int, Field(ge=1, le=5)] = 3
    action: ModerationAction


class WordPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pattern: Pattern | None = None
    is_regex: bool | None = None
    category: Category | None = None
    severity: Annotated[int, Field(ge=1, le=5)] | None = None
    action: ModerationAction | None = None


class WordOut(BaseModel):
    id: int
    pattern: str
    is_regex: bool
    category: str
    severity: int
    action: ModerationAction
    created_at: dt.datetime
    created_by: int | None


class WordList(BaseModel):
    items: list[WordOut]
    #: Rows the matcher skipped (should be empty: patterns are validated on the way in).
    errors: list[str]


class CheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(max_length=16_000)]


class CheckOut(BaseModel):
    action: Literal["allow", "warn", "reject"]
    category: str | None
    matched: str | None
    severity: int


class ModerationLogOut(BaseModel):
    id: int
    user_id: int | None
    source: str
    category: str
    action: str
    matched: str
    created_at: dt.datetime


class ModerationLogPage(BaseModel):
    items: list[ModerationLogOut]
    next_cursor: str | None


class AuditOut(BaseModel):
    id: int
    admin_id: int
    action: str
    target_type: str
    target_id: int | None
    details: dict[str, Any]
    created_at: dt.datetime


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_cursor: str | None

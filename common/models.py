"""The database schema as SQLAlchemy 2.0 models: the one source of truth for alembic.

The API uses these through the ORM. The realtime server never imports this module at run time:
it keeps its own SQL, and a test checks its column names against these tables. Enumerations are
``text`` columns with CHECK constraints (cheaper to evolve than PostgreSQL enums). Times are
``timestamptz``. User ids are ``bigint`` identities.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from geoalchemy2 import Geography, WKBElement
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, column_property, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

GENDERS = ("woman", "man", "nonbinary")
SWIPE_KINDS = ("like", "pass")
MESSAGE_KINDS = ("text", "image", "system")
REPORT_TYPES = ("inappropriate_content", "harassment", "fake_profile", "scam", "other")
REPORT_STATUSES = ("pending", "dismissed", "warned", "banned")
MODERATION_ACTIONS = ("warn", "reject")
ACCOUNT_TOKEN_PURPOSES = ("verify_email", "reset_password")


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        Index("ix_users_email_lower", func.lower(text("email")), unique=True),
        CheckConstraint("trust_score BETWEEN 0 AND 100", name="trust_range"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_admin: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    banned_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    ban_reason: Mapped[str | None] = mapped_column(String(500))
    token_version: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    trust_score: Mapped[int] = mapped_column(SmallInteger, server_default=text("50"))
    email_verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _now()
    last_active_at: Mapped[dt.datetime] = _now()
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Profile(Base):
    __tablename__ = "profiles"
    __table_args__ = (
        CheckConstraint(_in("gender", GENDERS), name="gender"),
        CheckConstraint("pref_age_min BETWEEN 18 AND 99", name="age_min"),
        CheckConstraint("pref_age_max BETWEEN pref_age_min AND 99", name="age_max"),
        CheckConstraint("pref_max_distance_km BETWEEN 1 AND 500", name="distance"),
    )

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    display_name: Mapped[str] = mapped_column(String(50))
    birth_date: Mapped[dt.date] = mapped_column(Date)
    gender: Mapped[str] = mapped_column(String(16))
    bio: Mapped[str] = mapped_column(String(500), server_default=text("''"))
    # The coarse cell centre, never the exact point (see docs/ARCHITECTURE.md, privacy).
    location: Mapped[WKBElement | None] = mapped_column(
        Geography(geometry_type="POINT", srid=4326, spatial_index=False)
    )
    location_updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    pref_age_min: Mapped[int] = mapped_column(SmallInteger, server_default=text("18"))
    pref_age_max: Mapped[int] = mapped_column(SmallInteger, server_default=text("99"))
    pref_max_distance_km: Mapped[int] = mapped_column(SmallInteger, server_default=text("50"))
    pref_genders: Mapped[list[str]] = mapped_column(
        ARRAY(String(16)), server_default=text("'{woman,man,nonbinary}'")
    )
    is_complete: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    updated_at: Mapped[dt.datetime] = _now()


Index("ix_profiles_location", Profile.location, postgresql_using="gist")


class Photo(Base):
    __tablename__ = "photos"
    __table_args__ = (Index("ix_photos_user_position", "user_id", "position"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    storage_key: Mapped[str] = mapped_column(String(64), unique=True)
    thumb_key: Mapped[str] = mapped_column(String(64), unique=True)
    content_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(SmallInteger)
    is_primary: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[dt.datetime] = _now()


class Interest(Base):
    __tablename__ = "interests"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    slug: Mapped[str] = mapped_column(String(40), unique=True)
    label: Mapped[str] = mapped_column(String(60))


class UserInterest(Base):
    __tablename__ = "user_interests"
    __table_args__ = (Index("ix_user_interests_interest", "interest_id"),)

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    interest_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("interests.id", ondelete="CASCADE"), primary_key=True
    )


class Swipe(Base):
    __tablename__ = "swipes"
    __table_args__ = (
        CheckConstraint(_in("kind", SWIPE_KINDS), name="kind"),
        CheckConstraint("swiper_id <> target_id", name="not_self"),
        Index("ix_swipes_target_kind", "target_id", "kind"),
        Index("ix_swipes_swiper_created", "swiper_id", "created_at"),
    )

    swiper_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    target_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = _now()


#: Hash partitions of ``messages`` on ``conversation_id`` (migration 0007 creates them as
#: ``messages_p0`` ..; alembic's comparison leaves them to it).
MESSAGE_PARTITIONS = 4


class Message(Base):
    """One chat message; ``(conversation_id, seq)`` is its place in the gapless order.

    Partitioned by HASH (conversation_id) (migration 0007): every unique key contains it, and
    every reader names it, so a statement reads one partition. The resend key is
    ``(conversation_id, sender_id, cmid)``: a resend names the same conversation, so the same
    ``cmid`` in another conversation is another message; it is an opaque client id, compared
    byte by byte (``COLLATE "C"``, cheaper in the key than the database's locale). ``id`` comes
    from ``messages_id_seq`` and is not indexed: nothing looks a message up by it.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint(
            "conversation_id", "sender_id", "cmid", name="uq_messages_conversation_sender_cmid"
        ),
        CheckConstraint(_in("kind", MESSAGE_KINDS), name="kind"),
        {"postgresql_partition_by": "HASH (conversation_id)"},
    )

    # No foreign keys (migration 0005): the batch function, the only writer, checks under the
    # conversation's row lock that the sender is a member; conversations and users are never
    # deleted (closed, anonymised). Per-row FK triggers were a third of a big batch's cost.
    conversation_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[int] = mapped_column(BigInteger, Identity())
    # Kept when an account is deleted (users are anonymised, not removed).
    sender_id: Mapped[int] = mapped_column(BigInteger)
    cmid: Mapped[str] = mapped_column(String(64, collation="C"))
    body: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16), server_default=text("'text'"))
    created_at: Mapped[dt.datetime] = _now()
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


def top_seq(conversation_id: Any) -> Any:
    """The conversation's newest ``seq`` (0 when empty): one backward probe of the messages key.

    Read it in a statement after taking the conversation's row lock, never in the locking one
    itself: in READ COMMITTED a ``SELECT ... FOR UPDATE`` that waited for the lock still sees
    messages as of before it waited.
    """
    return (
        select(func.coalesce(func.max(Message.seq), literal_column("0")))
        .where(Message.conversation_id == conversation_id)
        .correlate_except(Message)
        .scalar_subquery()
    )


class Conversation(Base):
    __tablename__ = "conversations"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    created_at: Mapped[dt.datetime] = _now()
    # Set by unmatch or block: no more sends, history hidden from both members.
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # Derived, read-only (migration 0005 dropped the stored columns the writer kept updating):
    # the newest message's seq and time, each one backward probe of the messages primary key.
    last_seq: Mapped[int] = column_property(top_seq(id))
    last_message_at: Mapped[dt.datetime | None] = column_property(
        select(Message.created_at)
        .where(Message.conversation_id == id)
        .order_by(Message.seq.desc())
        .limit(1)
        .correlate_except(Message)
        .scalar_subquery()
    )


class Match(Base):
    __tablename__ = "matches"
    __table_args__ = (
        UniqueConstraint("user_low_id", "user_high_id", name="uq_matches_pair"),
        CheckConstraint("user_low_id < user_high_id", name="ordered_pair"),
        Index("ix_matches_user_high", "user_high_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_low_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    user_high_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE")
    )
    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), unique=True
    )
    created_at: Mapped[dt.datetime] = _now()
    unmatched_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    unmatched_by: Mapped[int | None] = mapped_column(BigInteger)


class ConversationMember(Base):
    __tablename__ = "conversation_members"
    __table_args__ = (Index("ix_conversation_members_user", "user_id"),)

    conversation_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("conversations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    last_read_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    joined_at: Mapped[dt.datetime] = _now()
    # Derived, read-only (migration 0005): others' messages after the read mark, not deleted,
    # counted over the primary-key range (conversation_id, seq > last_read_seq).
    unread_count: Mapped[int] = column_property(
        select(func.count())
        .where(
            Message.conversation_id == conversation_id,
            Message.seq > last_read_seq,
            Message.sender_id != user_id,
            Message.deleted_at.is_(None),
        )
        .correlate_except(Message)
        .scalar_subquery()
    )


class Block(Base):
    __tablename__ = "blocks"
    __table_args__ = (
        CheckConstraint("blocker_id <> blocked_id", name="not_self"),
        Index("ix_blocks_blocked", "blocked_id"),
    )

    blocker_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[dt.datetime] = _now()


class Report(Base):
    __tablename__ = "reports"
    __table_args__ = (
        CheckConstraint(_in("type", REPORT_TYPES), name="type"),
        CheckConstraint(_in("status", REPORT_STATUSES), name="status"),
        Index("ix_reports_status_created", "status", "created_at"),
        Index("ix_reports_reporter_reported", "reporter_id", "reported_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    reporter_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    reported_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(1000))
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"))
    created_at: Mapped[dt.datetime] = _now()
    resolved_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))
    resolution_note: Mapped[str | None] = mapped_column(String(1000))


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_user_id", "user_id", "id"),
        # One unread ``message`` notification per (recipient, conversation): the realtime
        # nodes coalesce into it with ON CONFLICT, and read receipts find it by this key.
        Index(
            "uq_notifications_unread_message",
            "user_id",
            text("((payload ->> 'conversation_id')::bigint)"),
            unique=True,
            postgresql_where=text("kind = 'message' AND read_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _now()
    read_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class ModerationWord(Base):
    __tablename__ = "moderation_words"
    __table_args__ = (
        CheckConstraint(_in("action", MODERATION_ACTIONS), name="action"),
        CheckConstraint("severity BETWEEN 1 AND 5", name="severity"),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    pattern: Mapped[str] = mapped_column(String(200), unique=True)
    is_regex: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[int] = mapped_column(SmallInteger, server_default=text("3"))
    action: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[dt.datetime] = _now()
    created_by: Mapped[int | None] = mapped_column(BigInteger, ForeignKey("users.id"))


class ModerationLog(Base):
    """What the filter rejected or warned; the matched term only, never a message body."""

    __tablename__ = "moderation_log"
    __table_args__ = (
        CheckConstraint(_in("action", MODERATION_ACTIONS), name="action"),
        Index("ix_moderation_log_created", "created_at"),
        Index("ix_moderation_log_user", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )
    source: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(8))
    matched: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = _now()


class RefreshToken(Base):
    """An opaque refresh token, stored as its SHA-256; reuse after rotation revokes the family."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (
        Index("ix_refresh_tokens_family", "family_id"),
        Index("ix_refresh_tokens_user", "user_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    family_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    created_at: Mapped[dt.datetime] = _now()
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class AccountToken(Base):
    """A single-use secret sent by mail: an email verification code or a password reset."""

    __tablename__ = "account_tokens"
    __table_args__ = (
        CheckConstraint(_in("purpose", ACCOUNT_TOKEN_PURPOSES), name="purpose"),
        Index("ix_account_tokens_user_purpose", "user_id", "purpose"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))
    created_at: Mapped[dt.datetime] = _now()
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class TrustEvent(Base):
    """One move of a user's trust score, kept so the score can be explained and audited."""

    __tablename__ = "trust_events"
    __table_args__ = (Index("ix_trust_events_user", "user_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id", ondelete="CASCADE"))
    delta: Mapped[int] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = _now()


class AdminAuditLog(Base):
    __tablename__ = "admin_audit_log"
    __table_args__ = (Index("ix_admin_audit_log_created", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    admin_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(64))
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[int | None] = mapped_column(BigInteger)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _now()

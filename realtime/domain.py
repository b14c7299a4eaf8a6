"""Plain data passed between the protocol core, the node, the batch writer and the store.

Owns value types only: no I/O, no imports of asyncpg, redis or websockets, so the protocol core
and its unit tests can use them without any service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from common.codes import Err


@dataclass(slots=True)
class Memberships:
    """What one user may reach: open conversations (id -> other members) and block peers.

    Loaded at authentication, refreshed when a frame names an unknown conversation; owned by
    one socket's :class:`~realtime.protocol.Protocol`, which applies safety events to it as
    inputs (``conversation_closed``, ``peer_blocked``, ``conversation_opened``).
    """

    peers: dict[int, tuple[int, ...]] = field(default_factory=dict)
    blocked: frozenset[int] = frozenset()
    loaded_at: float = 0.0


@dataclass(frozen=True, slots=True)
class UserState:
    """The columns of ``users`` that decide whether a token may still be used."""

    token_version: int
    disabled: bool
    #: 0-100; below common.trust's threshold the daily message cap applies (realtime/moderation).
    trust_score: int = 50


class Replier(Protocol):
    """Whoever asked for a write and gets its outcome (a connection, or a test double)."""

    def send_finished(self, outcome: SendOutcome) -> None: ...

    def read_finished(self, outcome: ReadOutcome) -> None: ...


@dataclass(frozen=True, slots=True)
class SendRequest:
    sender: int
    cid: int
    cmid: str
    body: str
    kind: str
    rid: str | None
    peers: tuple[int, ...]
    #: When the frame arrived (epoch s): the send-to-ack latency metric starts here.
    received_at: float = 0.0


class BatchStatus(IntEnum):
    """``status`` of an outcome row of ``mm_commit_batch``.

    The same table as ``STATUSES`` of the newest write-path migration (a test checks).
    """

    STORED_NOW = 0
    STORED_BEFORE = 1  # a resend: the (cid, sender, cmid) was already stored, with this body
    CMID_CONFLICT = 2  # the (cid, sender, cmid) was stored with another body or kind
    NOT_MEMBER = 3
    CLOSED = 4


@dataclass(frozen=True, slots=True)
class Stored:
    """Where a message landed; ``dup`` when the ``(cid, sender, cmid)`` was already stored."""

    id: int
    seq: int
    time_ms: int
    dup: bool = False


@dataclass(frozen=True, slots=True)
class SendOutcome:
    request: SendRequest
    reply: Replier
    stored: Stored | None = None
    error: Err | None = None


@dataclass(frozen=True, slots=True)
class ReadRequest:
    user: int
    cid: int
    seq: int
    rid: str | None
    peers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ReadOutcome:
    request: ReadRequest
    reply: Replier
    seq: int = 0
    error: Err | None = None


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A row of ``messages`` as sync returns it."""

    cid: int
    seq: int
    id: int
    sender: int
    cmid: str
    body: str
    kind: str
    time_ms: int
    deleted: bool

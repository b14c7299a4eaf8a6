"""The realtime wire format: msgspec tagged unions of client and server frames.

Every frame is one JSON object in a text WebSocket frame, tagged by ``type``. Limits are part of
the types (``Annotated[..., Meta(...)]``) so an oversized or malformed field fails while
decoding, before any handler runs; the per-node body limit (``max_body_chars``, at most
:data:`BODY_HARD_MAX`) is checked by the protocol core after decoding. Unknown fields are refused
(``forbid_unknown_fields``). Evolution rule: new fields get defaults, no field changes type.

This module owns the shapes and the shared encoder/decoders only: no I/O and no policy.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from msgspec import Meta

#: Absolute cap on a body, whatever the settings say (``Settings.max_body_chars`` is <= this).
BODY_HARD_MAX: Final = 16_000
MAX_TOKEN_CHARS: Final = 4096
MAX_SYNC_CONVERSATIONS: Final = 1000
MAX_PRESENCE_QUERY: Final = 200

Id = Annotated[int, Meta(ge=1, le=2**63 - 1)]
Seq = Annotated[int, Meta(ge=0, le=2**63 - 1)]
Rid = Annotated[str, Meta(max_length=64)]
Cmid = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Body = Annotated[str, Meta(max_length=BODY_HARD_MAX)]
Token = Annotated[str, Meta(min_length=1, max_length=MAX_TOKEN_CHARS)]
ClientKind = Literal["text", "image"]


class _Client(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    """Base of client frames; ``rid`` is the client's request id, echoed in the answer."""


# -- client -> server -------------------------------------------------------------------------


class Auth(_Client, tag="auth"):
    token: Token
    rid: Rid | None = None


class Send(_Client, tag="send"):
    cid: Id
    cmid: Cmid
    body: Body
    kind: ClientKind = "text"
    rid: Rid | None = None


class Read(_Client, tag="read"):
    cid: Id
    seq: Seq
    rid: Rid | None = None


class Typing(_Client, tag="typing"):
    cid: Id
    on: bool = True
    rid: Rid | None = None


class Sync(_Client, tag="sync"):
    """``convs`` maps conversation id to the last ``seq`` held; ``all`` adds the others at 0."""

    convs: Annotated[dict[Id, Seq], Meta(max_length=MAX_SYNC_CONVERSATIONS)] = {}
    all: bool = True
    rid: Rid | None = None


class Ping(_Client, tag="ping"):
    rid: Rid | None = None


class PresenceQuery(_Client, tag="presence"):
    """Ask for the presence of ``users``; ids you may not see are answered ``unknown``."""

    users: Annotated[list[Id], Meta(min_length=1, max_length=MAX_PRESENCE_QUERY)]
    rid: Rid | None = None


ClientFrame = Auth | Send | Read | Typing | Sync | Ping | PresenceQuery


# -- server -> client -------------------------------------------------------------------------


class _Server(msgspec.Struct, tag_field="type", omit_defaults=True):
    """Base of server frames; times are epoch milliseconds."""


class Limits(msgspec.Struct, frozen=True):
    max_frame_bytes: int
    max_body_chars: int
    rate_per_s: float
    rate_burst: int
    sync_page_size: int
    typing_ttl_ms: int


class Ready(_Server, tag="ready"):
    user: int
    session: str
    node: str
    time: int
    expires_at: int
    heartbeat_s: float
    limits: Limits
    rid: str | None = None


class Ack(_Server, tag="ack"):
    cmid: str
    id: int
    cid: int
    seq: int
    time: int
    dup: bool = False
    rid: str | None = None


class Msg(_Server, tag="msg"):
    cid: int
    seq: int
    id: int
    sender: int
    cmid: str
    #: ``None`` when ``deleted`` (as the REST history answers): the message keeps its place.
    body: str | None
    kind: str
    time: int
    deleted: bool = False


class ReadReceipt(_Server, tag="read"):
    cid: int
    user: int
    seq: int


class TypingNotice(_Server, tag="typing"):
    cid: int
    user: int
    on: bool
    ttl_ms: int


class SyncPage(_Server, tag="sync"):
    msgs: list[Msg]
    end: bool
    gone: list[int] = []
    rid: str | None = None


class Reauth(_Server, tag="reauth"):
    expires_at: int


class Error(_Server, tag="error"):
    code: str
    retryable: bool
    message: str = ""
    rid: str | None = None


class Pong(_Server, tag="pong"):
    time: int
    rid: str | None = None


class MatchNotice(_Server, tag="match"):
    """A new match: conversation ``cid`` with ``user`` is open to this socket from now on."""

    cid: int
    user: int


class Deleted(_Server, tag="deleted"):
    """Message ``seq`` of ``cid`` was deleted by its sender: hide its body."""

    cid: int
    seq: int


class NotificationPush(_Server, tag="notification"):
    """A persisted notification (the API's ``/api/notifications`` lists the same ``id``)."""

    id: int
    kind: str
    payload: dict[str, object] = {}


PresenceStatus = Literal["online", "offline", "unknown"]


class PresenceState(msgspec.Struct, frozen=True, omit_defaults=True):
    """One user's presence; ``last_seen`` (epoch ms, rounded down to the minute) when known."""

    user: int
    state: PresenceStatus
    last_seen: int = 0


class Presence(_Server, tag="presence"):
    """Presence of users you share an open conversation with: an answer (``rid``) or a push."""

    users: list[PresenceState]
    rid: str | None = None


ServerFrame = (
    Ready
    | Ack
    | Msg
    | ReadReceipt
    | TypingNotice
    | SyncPage
    | Reauth
    | Error
    | Pong
    | MatchNotice
    | Deleted
    | NotificationPush
    | Presence
)

#: One reusable encoder and one decoder per union (msgspec caches the type plans).
encoder: Final = msgspec.json.Encoder()
client_decoder: Final = msgspec.json.Decoder(ClientFrame)
server_decoder: Final = msgspec.json.Decoder(ServerFrame)


def encode(frame: ServerFrame | ClientFrame) -> bytes:
    return encoder.encode(frame)


class Scope(msgspec.Struct):
    """The routing fields of any server frame; every other field is skipped while decoding."""

    cid: int = 0
    sender: int = 0
    user: int = 0


_scope_decoder: Final = msgspec.json.Decoder(Scope)


def scope_of(data: bytes) -> tuple[int, int]:
    """``(cid, author)`` of an encoded server frame (0 for what it lacks), for fan-out filters.

    The author is ``sender`` (``msg``) or else ``user`` (``read``, ``typing``, ``presence``).
    """
    try:
        scope = _scope_decoder.decode(data)
    except msgspec.MsgspecError:
        return 0, 0
    return scope.cid, scope.sender or scope.user

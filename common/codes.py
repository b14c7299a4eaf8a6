"""The published close codes and error codes of the realtime protocol.

One table imported by the server, the tests and the load generator, so a code can never mean two
things. Close codes come in two bands, as in centrifuge's ``disconnect.go``: 4000-4099 tell the
client to reconnect (with backoff, and a fresh token where the name says so) and then ``sync``;
4100-4199 are terminal: reconnecting with the same credentials cannot succeed. Error codes
travel in ``error`` frames on an open socket; the socket stays open. This module holds constants
only: no I/O, no imports from ``realtime`` or ``api``.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum
from typing import Final

RECONNECT_BAND: Final = range(4000, 4100)
TERMINAL_BAND: Final = range(4100, 4200)


class Close(IntEnum):
    """WebSocket close codes sent by a realtime node (RFC 6455 private range)."""

    # Reconnect band: 4000-4099.
    GOING_AWAY = 4000
    """The node is shutting down or draining: reconnect (any node) and sync."""
    SLOW_CONSUMER = 4001
    """The socket's outbound buffer passed the high-water mark: reconnect and sync."""
    TOKEN_LAPSED = 4002
    """The token of this open socket expired without a refresh: get a fresh token, reconnect."""
    TOKEN_EXPIRED = 4003
    """The token offered at authentication had already expired: refresh it, then reconnect."""
    AUTH_TIMEOUT = 4004
    """No token arrived (header or ``auth`` frame) within the auth timeout: reconnect."""
    UNAVAILABLE = 4005
    """The node could not check the token (Redis and PostgreSQL unreachable): retry later."""
    INTERNAL = 4006
    """An unexpected server fault on this socket: reconnect and sync."""
    # Standard code of the same meaning (in STANDARD_RECONNECT), sent by a draining node.
    SERVICE_RESTART = 1012
    """The node is draining (SIGTERM): reconnect at once (another node answers) and sync."""

    # Terminal band: 4100-4199.
    BAD_TOKEN = 4100
    """The token is malformed, badly signed, of the wrong type or for another user: log in."""
    REVOKED = 4101
    """The token's version is older than the user's current one (logout, password, ban)."""
    TOKEN_IN_QUERY = 4102
    """A token was put in the URL query string, where it would land in logs: refused."""
    ACCOUNT_DISABLED = 4103
    """The account is banned, deactivated or deleted."""
    PROTOCOL_VIOLATION = 4104
    """Binary frame, or a frame other than ``auth`` before authentication."""
    TOO_MANY_CONNECTIONS = 4105
    """The user already has the maximum number of sockets open on this node."""


#: Standard codes a client may see (sent by the library or the network) that mean "reconnect".
STANDARD_RECONNECT: Final = frozenset({1001, 1006, 1011, 1012, 1013})


def is_reconnect(code: int) -> bool:
    """True when a client should reconnect (with backoff) after a close with ``code``."""
    return code in RECONNECT_BAND or code in STANDARD_RECONNECT


def is_terminal(code: int) -> bool:
    """True when reconnecting with the same credentials cannot succeed."""
    return code in TERMINAL_BAND or code == 1009


class Err(StrEnum):
    """Codes of ``error`` frames: the request failed, the socket stays open."""

    BAD_JSON = "bad_json"
    """The frame is not a JSON object."""
    UNKNOWN_TYPE = "unknown_type"
    """The ``type`` field is missing or names no client frame."""
    BAD_FIELD = "bad_field"
    """A field is missing, unknown, of the wrong type or out of its declared range."""
    BODY_TOO_LONG = "body_too_long"
    """The message body has more characters than the node's limit (see ``ready.limits``)."""
    NOT_MEMBER = "not_member"
    """No such conversation for this user (a foreign one answers exactly like a missing one)."""
    BLOCKED = "blocked"
    """One member blocked the other: no message, typing or receipt between them."""
    CONVERSATION_CLOSED = "conversation_closed"
    """The conversation was closed (unmatch or block): it takes no more messages."""
    CMID_CONFLICT = "cmid_conflict"
    """This ``cmid`` was already used by this sender for a different message."""
    RATE_LIMITED = "rate_limited"
    """Too many frames: wait and retry (the per-connection token bucket is empty)."""
    DB_UNAVAILABLE = "db_unavailable"
    """PostgreSQL is unreachable: nothing was stored; resend the same ``cmid`` later."""
    INTERNAL = "internal"
    """An unexpected server fault while handling this frame: retry later."""
    UNAVAILABLE = "unavailable"
    """Redis is unreachable, so presence cannot be read now: retry later."""
    CONTENT_REJECTED = "content_rejected"
    """The message matched a moderation rule whose action is reject: nothing was stored."""
    DAILY_CAP = "daily_cap"
    """A low-trust account reached its daily message cap (UTC day): nothing was stored."""


#: Error codes after which the same frame, sent again later, may succeed.
RETRYABLE: Final = frozenset({Err.RATE_LIMITED, Err.DB_UNAVAILABLE, Err.INTERNAL, Err.UNAVAILABLE})

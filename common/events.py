"""Safety events: the durable Redis stream the API writes and every realtime node reads.

Anything that changes who may talk to whom (block, unblock, unmatch, match, ban, token-version
bump, moderation list change) is appended here after the API's transaction commits. Each node
reads the stream from its last id (XREAD), so a node that lost its Redis connection catches up.
Events are msgspec-tagged structs, encoded as one JSON field ``e`` per stream entry.
"""

from __future__ import annotations

from typing import Final

import msgspec

from common.redisclient import RedisClient
from common.rediskeys import SAFETY_STREAM

#: Approximate cap on the stream's length; nodes are expected to be at most seconds behind.
SAFETY_STREAM_MAXLEN: Final = 100_000


class Block(msgspec.Struct, tag="block", frozen=True):
    blocker: int
    blocked: int


class Unblock(msgspec.Struct, tag="unblock", frozen=True):
    blocker: int
    blocked: int


class Match(msgspec.Struct, tag="match", frozen=True):
    users: tuple[int, int]
    cid: int


class Unmatch(msgspec.Struct, tag="unmatch", frozen=True):
    users: tuple[int, int]
    cid: int


class Ban(msgspec.Struct, tag="ban", frozen=True):
    user: int
    until: float | None = None  # epoch seconds; None is permanent


class TokenBump(msgspec.Struct, tag="token_bump", frozen=True):
    """Password change, reset or logout everywhere: tokens older than ``version`` die."""

    user: int
    version: int


class ModerationChanged(msgspec.Struct, tag="moderation_changed", frozen=True):
    """The moderation word list changed: nodes reload it."""


class Notify(msgspec.Struct, tag="notify", frozen=True):
    """A persisted notification to push live if the user is connected."""

    user: int
    id: int
    kind: str  # "match", "like", "message" or "system" (api/schemas/notifications.py)
    payload: dict[str, object] = {}


class MessageDeleted(msgspec.Struct, tag="message_deleted", frozen=True):
    """A member deleted their message ``seq`` in ``cid``: members' clients hide its body."""

    cid: int
    seq: int
    users: tuple[int, ...]


class ReadUpTo(msgspec.Struct, tag="read_up_to", frozen=True):
    """``user`` read ``cid`` up to ``seq`` over REST (same effect as a realtime ``read`` frame)."""

    cid: int
    user: int
    seq: int


SafetyEvent = (
    Block
    | Unblock
    | Match
    | Unmatch
    | Ban
    | TokenBump
    | ModerationChanged
    | Notify
    | MessageDeleted
    | ReadUpTo
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(SafetyEvent)


def encode_event(event: SafetyEvent) -> bytes:
    return _encoder.encode(event)


def decode_event(data: bytes) -> SafetyEvent:
    """Raise ``msgspec.ValidationError`` / ``DecodeError`` on a malformed entry."""
    event: SafetyEvent = _decoder.decode(data)
    return event


async def publish(redis: RedisClient, *events: SafetyEvent) -> None:
    """Append events in one round trip; call after the database transaction has committed."""
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.xadd(
                SAFETY_STREAM,
                {"e": encode_event(event)},
                maxlen=SAFETY_STREAM_MAXLEN,
                approximate=True,
            )
        await pipe.execute()

"""Names of the Redis keys more than one service touches, the token-version cache, and the
two reply shapes every reader needs (a key or id as text, the entries of an XREAD reply).

The API writes a user's current token version here whenever it bumps it (password change,
reset, logout everywhere, ban), before publishing ``TokenBump`` on the safety stream; a realtime
node compares a token's ``ver`` claim with it at authentication. A missing key means "ask
PostgreSQL" (the reader fills it in).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

from redis.asyncio import Redis

PREFIX: Final = "mm:"
TOKEN_VERSION_TTL_S: Final = 7 * 24 * 3600
#: Sorted set: node id -> last heartbeat (epoch seconds).
NODES: Final = "mm:nodes"


def token_version_key(user_id: int) -> str:
    return f"mm:user:{user_id}:tv"


def node_key(node_id: str) -> str:
    """Hash of one realtime node's heartbeat (see :mod:`common.cluster`)."""
    return f"mm:node:{node_id}"


def delivery_stream(node_id: str) -> str:
    """The stream a realtime node reads its deliveries from."""
    return f"mm:node:{node_id}:deliveries"


async def set_token_version(redis: Redis, user_id: int, version: int) -> None:
    await redis.set(token_version_key(user_id), version, ex=TOKEN_VERSION_TTL_S)


async def get_token_version(redis: Redis, user_id: int) -> int | None:
    value = await redis.get(token_version_key(user_id))
    return None if value is None else int(value)


async def get_token_versions(redis: Redis, user_ids: list[int]) -> dict[int, int | None]:
    """Several users' cached versions in one MGET (None where Redis holds none)."""
    values = await redis.mget([token_version_key(user) for user in user_ids])
    return {
        user: None if value is None else int(value)
        for user, value in zip(user_ids, values, strict=True)
    }


def as_text(value: object) -> str:
    """A key, member or stream id from a Redis reply as ``str`` (bytes unless decoding is on)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_entries(reply: Any) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """The ``(id, fields)`` entries of an XREAD reply, whichever RESP version shaped it."""
    streams = reply.items() if isinstance(reply, dict) else (reply or [])
    for _name, entries in streams:
        for entry_id, fields in entries:
            yield as_text(entry_id), fields

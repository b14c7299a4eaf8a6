"""Names of the Redis keys more than one service touches, and the token-version cache.

The API writes a user's current token version here whenever it bumps it (password change,
reset, logout everywhere, ban), before publishing ``TokenBump`` on the safety stream; a realtime
node compares a token's ``ver`` claim with it at authentication. A missing key means "ask
PostgreSQL" (the reader fills it in).
"""

from __future__ import annotations

from typing import Final

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

"""Where a node reads the safety events from: the seam (:class:`SafetyFeed`) and its Redis
implementation, the stream :data:`common.rediskeys.SAFETY_STREAM` the API appends to. The
in-memory twin is :class:`realtime.memory.MemorySafetyFeed`; one contract suite
(``tests/realtime/test_seams.py``) runs against both.

Entry ids are Redis stream ids (``<ms>-<n>``), ordered; a reader resumes after the last one it
read. Exceptions: RedisClient failures become :class:`FeedUnavailable`; nothing above this module
sees a redis type. It must not apply events (:mod:`realtime.safety` does).
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from common import events
from common.redisclient import redis_client
from common.redisedge import REDIS_FAILURES, read_stream
from common.rediskeys import SAFETY_STREAM, as_text, stream_entries


class FeedUnavailable(Exception):
    """The safety feed could not answer."""


class SafetyFeed(Protocol):
    async def newest(self) -> str:
        """The id of the newest event, ``0-0`` when there is none."""

    async def read(self, after: str, *, count: int) -> list[tuple[str, bytes]]:
        """Up to ``count`` encoded events after ``after``, oldest first, waiting up to the
        feed's block time for one; an empty list when none came."""

    async def publish(self, *items: events.SafetyEvent) -> None:
        """Append events (the API's side; tests and a node without the API use it too)."""

    async def close(self) -> None: ...


class RedisSafetyFeed:
    """:class:`SafetyFeed` on a Redis stream, with a client of its own (XREAD BLOCK holds its
    connection)."""

    def __init__(self, url: str, *, name: str, timeout_s: float, block_ms: int = 1000) -> None:
        self.timeout_s, self.block_ms = timeout_s, block_ms
        self.redis = redis_client(
            url,
            socket_timeout=block_ms / 1000 + timeout_s,
            socket_connect_timeout=timeout_s,
            client_name=name,
        )

    async def newest(self) -> str:
        try:
            entries = await asyncio.wait_for(
                self.redis.xrevrange(SAFETY_STREAM, count=1), self.timeout_s
            )
        except REDIS_FAILURES as exc:
            raise FeedUnavailable(type(exc).__name__) from exc
        return as_text(entries[0][0]) if entries else "0-0"

    async def read(self, after: str, *, count: int) -> list[tuple[str, bytes]]:
        try:
            reply = await read_stream(
                self.redis, SAFETY_STREAM, after, count=count, block_ms=self.block_ms
            )
        except REDIS_FAILURES as exc:
            raise FeedUnavailable(type(exc).__name__) from exc
        return [(entry_id, fields.get(b"e", b"")) for entry_id, fields in stream_entries(reply)]

    async def publish(self, *items: events.SafetyEvent) -> None:
        try:
            await asyncio.wait_for(events.publish(self.redis, *items), self.timeout_s)
        except REDIS_FAILURES as exc:
            raise FeedUnavailable(type(exc).__name__) from exc

    async def close(self) -> None:
        await self.redis.aclose()

"""Safety events round-trip through the real Redis stream in order."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from redis.asyncio import Redis

from common.events import (
    Ban,
    Block,
    Match,
    SafetyEvent,
    TokenBump,
    decode_event,
    publish,
)
from common.rediskeys import SAFETY_STREAM


async def test_published_events_are_read_back_in_order(redis: Redis) -> None:
    start = await redis.xinfo_stream(SAFETY_STREAM) if await redis.exists(SAFETY_STREAM) else None
    last_id = start["last-generated-id"] if start else b"0-0"
    events: list[SafetyEvent] = [
        Block(blocker=1, blocked=2),
        Match(users=(3, 4), cid=9),
        Ban(user=5),
        TokenBump(user=6, version=2),
    ]
    await publish(redis, *events)
    entries: Any = await redis.xread({SAFETY_STREAM: last_id}, count=10)
    decoded = [decode_event(fields[b"e"]) for _id, fields in entries[0][1]]
    assert decoded == events


def test_malformed_event_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"ban","user":"not-a-number"}')
    with pytest.raises(msgspec.ValidationError):
        decode_event(b'{"type":"teleport","user":1}')

"""Realtime node heartbeats in Redis: written by each node, read by the API's admin routes.

Each node refreshes ``mm:{nodes}:node:<id>`` (a key with a TTL) and its score in the ``mm:{nodes}``
sorted set every heartbeat. A node whose heartbeat is older than ``stale_after_s`` is dead: its
entry is ignored by readers and removed by :func:`prune_dead_nodes`.
"""

from __future__ import annotations

import time

import msgspec

from common.redisclient import RedisClient
from common.rediskeys import NODES, as_text, node_key


class NodeInfo(msgspec.Struct, frozen=True):
    id: str
    address: str
    started_at: float
    heartbeat_at: float
    connections: int
    users: int
    messages_per_s: float = 0.0
    batch_size_avg: float = 0.0
    commit_ms_avg: float = 0.0
    delivery_lag_ms: float = 0.0


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(NodeInfo)


async def publish_heartbeat(redis: RedisClient, info: NodeInfo, *, ttl_s: float) -> None:
    """Write this node's heartbeat in one round trip; the hash expires by itself after ``ttl_s``."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.set(node_key(info.id), _encoder.encode(info), px=int(ttl_s * 1000))
        pipe.zadd(NODES, {info.id: info.heartbeat_at})
        await pipe.execute()


async def remove_node(redis: RedisClient, node_id: str) -> None:
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(node_key(node_id))
        pipe.zrem(NODES, node_id)
        await pipe.execute()


async def live_nodes(
    redis: RedisClient, *, stale_after_s: float, now: float | None = None
) -> list[NodeInfo]:
    """Nodes whose last heartbeat is younger than ``stale_after_s``, by id."""
    now = time.time() if now is None else now
    ids = await redis.zrangebyscore(NODES, now - stale_after_s, "+inf")
    if not ids:
        return []
    raw = await redis.mget([node_key(as_text(node_id)) for node_id in ids])
    nodes = [_decoder.decode(value) for value in raw if value is not None]
    return sorted(nodes, key=lambda node: node.id)


async def prune_dead_nodes(
    redis: RedisClient, *, stale_after_s: float, now: float | None = None
) -> int:
    """Forget nodes with no heartbeat for ``stale_after_s``; return how many were removed."""
    now = time.time() if now is None else now
    removed: int = await redis.zremrangebyscore(NODES, "-inf", now - stale_after_s)
    return removed

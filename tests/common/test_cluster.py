"""Node heartbeats through the real Redis: live nodes listed, stale ones ignored and pruned."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from common.cluster import NodeInfo, live_nodes, prune_dead_nodes, publish_heartbeat, remove_node
from common.rediskeys import get_token_version, set_token_version


def _node(node_id: str, at: float, connections: int = 0) -> NodeInfo:
    return NodeInfo(
        id=node_id,
        address="127.0.0.1:1",
        started_at=at,
        heartbeat_at=at,
        connections=connections,
        users=connections,
    )


async def test_live_nodes_ignore_and_prune_stale_heartbeats(redis: Redis) -> None:
    now = time.time()
    await publish_heartbeat(redis, _node("test-live", now, 7), ttl_s=30)
    await publish_heartbeat(redis, _node("test-stale", now - 120, 3), ttl_s=30)
    live = await live_nodes(redis, stale_after_s=30, now=now)
    assert [(n.id, n.connections) for n in live if n.id.startswith("test-")] == [("test-live", 7)]
    assert await prune_dead_nodes(redis, stale_after_s=30, now=now) >= 1
    await remove_node(redis, "test-live")
    assert not [n for n in await live_nodes(redis, stale_after_s=30) if n.id.startswith("test-")]


async def test_token_version_cache_round_trip(redis: Redis) -> None:
    assert await get_token_version(redis, 987654) is None
    await set_token_version(redis, 987654, 4)
    assert await get_token_version(redis, 987654) == 4

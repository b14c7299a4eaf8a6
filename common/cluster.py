"""Realtime node heartbeats in Redis: each node's lease, read by the other nodes and by the
API's admin routes.

Each node renews ``mm:{nodes}:node:<id>`` (a key with the node's TTL: its *lease*) and its score
in the ``mm:{nodes}`` sorted set every heartbeat (:func:`renew_lease`, one script, one slot). The
lease is what keeps the node's routes and online users alive (:mod:`realtime.leases`): while the
key exists the node is alive; once it has expired the other nodes reap the node. The renewal
says whether the key was still there, so a node that was cut off longer than its TTL (and may
have been reaped) knows to register its users again. A node whose heartbeat is older than
``stale_after_s`` is dead: its entry is ignored by :func:`live_nodes` and removed by
:func:`prune_dead_nodes`.
"""

from __future__ import annotations

import time

import msgspec

from common.redisclient import RedisClient
from common.redisedge import LuaScript, eval_scripts
from common.rediskeys import NODES, as_text, node_key

# KEYS: the node's heartbeat key, the registry. ARGV: the NodeInfo JSON, ttl (ms), heartbeat
# time (epoch s), node id. 1 if the key was still there (the lease held), else 0 (written anew).
LEASE_LUA = """
local held = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'XX')
if not held then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
if held then return 1 end
return 0
"""
LEASE = LuaScript(LEASE_LUA)


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


async def renew_lease(redis: RedisClient, info: NodeInfo, *, ttl_s: float) -> bool:
    """Write this node's heartbeat (its lease, for ``ttl_s``) in one round trip; False when the
    key had gone (the node's first heartbeat, or its lease lapsed and others may have reaped
    it: the caller registers its users again)."""
    keys = [node_key(info.id), NODES]
    args = (_encoder.encode(info), int(ttl_s * 1000), info.heartbeat_at, info.id)
    (held,) = await eval_scripts(redis, [(LEASE, keys, args)])
    return bool(held)


async def leased_nodes(redis: RedisClient) -> dict[str, int]:
    """The registered nodes whose lease key exists now, with the ms it has left (O(nodes): one
    ZRANGE, then one PTTL per node in one pipeline)."""
    ids = [as_text(node_id) for node_id in await redis.zrange(NODES, 0, -1)]
    if not ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for node_id in ids:
            pipe.pttl(node_key(node_id))
        left = await pipe.execute()
    return {node_id: int(ms) for node_id, ms in zip(ids, left, strict=True) if int(ms) > 0}


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

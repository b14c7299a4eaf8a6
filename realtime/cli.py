"""``python -m realtime nodes``: the live realtime nodes and the cluster-wide connection count.

Reads the heartbeats every node publishes (:mod:`common.cluster`); a node whose heartbeat is
older than ``presence_ttl_s`` is dead and not listed. Read-only: it never prunes or changes
anything in Redis.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

import msgspec

from common.cluster import NodeInfo, live_nodes
from common.redisclient import redis_client
from common.redisedge import REDIS_FAILURES
from common.settings import Settings


async def fetch_nodes(settings: Settings) -> list[NodeInfo]:
    redis = redis_client(
        settings.redis_url,
        socket_timeout=settings.realtime_io_timeout_s,
        socket_connect_timeout=settings.realtime_io_timeout_s,
    )
    try:
        return await live_nodes(redis, stale_after_s=settings.presence_ttl_s)
    finally:
        await redis.aclose()


def render(nodes: list[NodeInfo], *, now: float) -> str:
    rows = [("NODE", "ADDRESS", "UP", "CONNS", "USERS", "MSG/S", "BATCH", "COMMIT_MS", "LAG_MS")]
    for n in nodes:
        rows.append(
            (
                n.id,
                n.address,
                f"{max(0.0, now - n.started_at):.0f}s",
                str(n.connections),
                str(n.users),
                f"{n.messages_per_s:g}",
                f"{n.batch_size_avg:g}",
                f"{n.commit_ms_avg:g}",
                f"{n.delivery_lag_ms:g}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    total = sum(n.connections for n in nodes)
    lines.append(f"{len(nodes)} live node(s), {total} connection(s)")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def nodes_command(settings: Settings, *, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Print the live nodes; exit status 1 when Redis cannot be read."""
    try:
        nodes = asyncio.run(fetch_nodes(settings))
    except REDIS_FAILURES as exc:
        print(f"cannot read Redis: {type(exc).__name__}", file=sys.stderr)
        return 1
    if as_json:
        total = sum(n.connections for n in nodes)
        out.write(msgspec.json.encode({"nodes": nodes, "connections": total}).decode() + "\n")
    else:
        out.write(render(nodes, now=time.time()))
    return 0

"""The one place a process builds a Redis client: ``redis.asyncio.Redis`` for one Redis, or
``redis.asyncio.RedisCluster`` when ``MM_REDIS_URL`` is ``redis+cluster://`` (or
``rediss+cluster://``) with one or more seed nodes (:func:`common.settings.cluster_nodes`).

Both services and the tools call :func:`redis_client`; code that talks to Redis takes a
:data:`RedisClient` and uses only what both clients offer (commands, non-transactional
pipelines, single-slot MULTI pipelines, :func:`common.redisedge.eval_scripts`). On a cluster
the client routes each command by its key's hash slot, follows ``MOVED``/``ASK`` redirections
and refreshes its slot map after a failover; keyless commands (``PING``, ``INFO``,
``FLUSHDB``, ``SCRIPT LOAD``) go to the nodes redis-py's command policies name (every node or
every primary).
"""

from __future__ import annotations

from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline

from common.settings import CLUSTER_SCHEMES, cluster_nodes

#: Either client; see the module docstring for what code may rely on.
RedisClient: TypeAlias = Redis | RedisCluster
#: Either client's pipeline.
AnyPipeline: TypeAlias = Pipeline | ClusterPipeline
#: Connections a cluster client may open per node (redis-py's default is 100; the single
#: client's pool is unbounded, and a reconnect storm's token reads must not fail for want of one).
CLUSTER_MAX_CONNECTIONS_PER_NODE = 1000


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def redis_client(
    url: str,
    *,
    socket_timeout: float | None = None,
    socket_connect_timeout: float | None = None,
    client_name: str | None = None,
) -> RedisClient:
    """A client for ``url`` (connects lazily, on the first command)."""
    given = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "client_name": client_name,
    }
    options: dict[str, Any] = {name: value for name, value in given.items() if value is not None}
    if not is_cluster_url(url):
        return Redis.from_url(url, **options)
    parsed = cluster_nodes(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.tls,
        # A shard whose master is down (until its replica takes over) must not stop the others.
        require_full_coverage=False,
        max_connections=CLUSTER_MAX_CONNECTIONS_PER_NODE,
        **options,
    )


async def ping(redis: RedisClient) -> None:
    """Raise unless Redis answers: one Redis's ``PING``; on a cluster, the client's default
    node's (redis-py's own ``PING`` asks every node, so one shard failing over would make every
    process unready at once, while the others serve)."""
    if isinstance(redis, RedisCluster):
        await redis.ping(target_nodes=RedisCluster.DEFAULT_NODE)
    else:
        await redis.ping()

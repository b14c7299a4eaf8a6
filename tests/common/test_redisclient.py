"""The one client factory: the URL alone decides the client type (pure: nothing connects)."""

from __future__ import annotations

from redis.asyncio import Redis, RedisCluster

from common.redisclient import is_cluster_url, redis_client


async def test_one_redis_url_gives_redis_and_a_cluster_url_gives_redis_cluster() -> None:
    single = redis_client("redis://127.0.0.1:6390/3", socket_timeout=1.5, client_name="t")
    assert type(single) is Redis
    kwargs = single.connection_pool.connection_kwargs
    assert (kwargs["port"], kwargs["db"], kwargs["socket_timeout"]) == (6390, 3, 1.5)
    await single.aclose()
    url = "redis+cluster://u:pw@127.0.0.1:7001,127.0.0.2:7002"
    cluster = redis_client(url, socket_timeout=1.5)
    assert isinstance(cluster, RedisCluster) and is_cluster_url(url)
    seeds = {(node.host, int(node.port)) for node in cluster.nodes_manager.startup_nodes.values()}
    assert seeds == {("127.0.0.1", 7001), ("127.0.0.2", 7002)}
    kwargs = cluster.get_connection_kwargs()
    assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == ("u", "pw", 1.5)
    await cluster.aclose()

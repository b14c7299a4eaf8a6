"""``eval_scripts`` on the real cluster: calls packed per node, an unknown script resent in
full, a stale slot map (``MOVED``) followed without running a call twice, and the token-version
``MGET``s per node; ``read_stream`` reads its stream's node alone."""

from __future__ import annotations

from redis.asyncio import RedisCluster

from common.redisclient import RedisClient
from common.redisedge import Call, eval_scripts, read_stream
from common.rediskeys import (
    by_user_group,
    delivery_stream,
    get_token_versions,
    route_key,
    set_token_version,
)
from realtime.broker import ROUTES, XADD


async def test_routes_calls_of_every_tag_answer_in_order_and_after_a_script_flush(
    redis: RedisClient,
) -> None:
    assert isinstance(redis, RedisCluster)
    users = list(range(900_001, 900_049))
    groups = by_user_group(users)
    assert len(groups) > 1
    for user in users[::3]:
        await redis.zadd(route_key(user), {"elsewhere": 1_000})  # scored by when it was written
    calls = [(ROUTES, [route_key(u) for u in g], ("me", 0)) for g in groups]
    expected = [
        [x for i, u in enumerate(g, 1) if u in users[::3] for x in (i, b"elsewhere,1000")]
        for g in groups
    ]
    assert await eval_scripts(redis, calls) == expected
    await redis.script_flush()  # every primary forgets: NOSCRIPT, then EVAL in full
    assert await eval_scripts(redis, calls) == expected


async def test_a_stale_slot_map_is_followed_and_no_call_runs_twice(redis: RedisClient) -> None:
    assert isinstance(redis, RedisCluster)
    await redis.initialize()
    streams = [delivery_stream(f"edge-{i}") for i in range(6)]
    owners = {s: redis.get_node_from_key(s) for s in streams}
    # Point every stream's slot at a node that does not own it: each call answers MOVED.
    for stream in streams:
        slot = redis.keyslot(stream)
        wrong = next(n for n in redis.get_primaries() if n != owners[stream])
        redis.nodes_manager.slots_cache[slot] = [wrong]
    calls: list[Call] = [(XADD, [s], [1000, b"1", b"f", b"0:0", s.encode()]) for s in streams]
    assert await eval_scripts(redis, calls) == [1] * len(streams)
    for stream in streams:
        assert await redis.xlen(stream) == 1  # ran once, on its owner
        assert redis.get_node_from_key(stream) == owners[stream]  # the map was corrected


async def test_token_versions_are_read_per_tag_across_nodes(redis: RedisClient) -> None:
    users = list(range(910_001, 910_040))
    for user in users[::2]:
        await set_token_version(redis, user, user % 7)
    got = await get_token_versions(redis, users)
    assert got == {u: (u % 7 if u in users[::2] else None) for u in users}


async def _getkeys_calls(redis: RedisCluster) -> int:
    """``COMMAND GETKEYS`` calls served so far, summed over every node (``INFO commandstats``)."""
    stats = await redis.info("commandstats", target_nodes=RedisCluster.ALL_NODES)
    return sum(
        int(node.get("cmdstat_command|getkeys", {}).get("calls", 0)) for node in stats.values()
    )


async def test_read_stream_asks_only_the_streams_node(redis: RedisClient) -> None:
    """redis-py cannot find XREAD's key in the command's key specs, so its ``xread`` asks the
    default node (``COMMAND GETKEYS``) before every read: a node other than the stream's, which
    may be the one that is down. ``read_stream`` sends the read to the stream's node alone,
    and reads what ``xread`` reads."""
    assert isinstance(redis, RedisCluster)
    stream = delivery_stream("edge-read")
    await redis.xadd(stream, {b"f": b"x"})
    expected = await redis.xread({stream: "0-0"}, count=10, block=100)
    before = await _getkeys_calls(redis)
    for _ in range(5):
        assert await read_stream(redis, stream, "0-0", count=10, block_ms=100) == expected
    assert await _getkeys_calls(redis) == before
    for _ in range(5):
        await redis.xread({stream: "0-0"}, count=10, block=100)
    assert await _getkeys_calls(redis) >= before + 5  # what read_stream saves

"""The Redis edge's two shared rules: which exceptions mean "Redis could not answer", and how
Lua scripts are called together.

:data:`REDIS_FAILURES` is the one tuple realtime and the API catch at their Redis adapters
(a redis error, a socket error, a timeout of the client or of ``asyncio.wait_for``); nothing
above an adapter catches a redis type.

:func:`eval_scripts` sends many single-slot script calls by SHA in one round trip, packed in
one write on one pooled connection. (redis-py's ``Script`` inside a pipeline sends ``SCRIPT
EXISTS`` before every execute, one more round trip each time, and its pipeline costs more per
command than the scripts' own work.) A script unknown to the server (``NOSCRIPT``: a restart, a
``SCRIPT FLUSH``) is sent again in full for the calls that failed, in a second round trip, and
never for the calls that ran, so a write is not repeated.

:func:`read_stream` is the one ``XREAD`` of a stream (the delivery and safety readers).

On a Redis Cluster (:class:`redis.asyncio.RedisCluster`) the calls are grouped by the node that
owns each call's slot (its first key's: a call's keys share one slot by design) and packed per
node, the nodes' round trips concurrent. A call a node answers with a redirection (``MOVED``,
``ASK``, ``TRYAGAIN``, ``CLUSTERDOWN``: a failover or resharding under way) did not run: it is
sent again alone through the cluster client, which follows the redirection and updates its slot
map. A node that cannot be reached fails the whole call, as on one Redis, and asks the client
for a fresh slot map (its replica may have taken over).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from common.redisclient import RedisClient

#: Every failure of a Redis call: the client's errors, the socket's, and timeouts.
REDIS_FAILURES: Final = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)

Arg = str | bytes | int | float


@dataclass(frozen=True, slots=True)
class LuaScript:
    """A script's source and SHA1 (what EVALSHA names it by)."""

    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.source.encode(), usedforsecurity=False)
        object.__setattr__(self, "sha", digest.hexdigest())


#: Replies a cluster node gives for a call it did not run (MovedError is an AskError).
_REDIRECTED: Final = (AskError, TryAgainError, ClusterDownError)

#: One script call: the script, its keys (all in one hash slot), its arguments.
Call = tuple[LuaScript, Sequence[str], Sequence[Arg]]


async def eval_scripts(redis: RedisClient, calls: Sequence[Call]) -> list[Any]:
    """The replies of ``calls``, in order, from one round trip (two if a script was unknown).

    Raises the first error reply, or the client's failure, like a pipeline's ``execute`` does.
    """
    if not calls:
        return []
    replies = await _packed(redis, [("EVALSHA", s.sha, len(k), *k, *a) for s, k, a in calls])
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        again = [calls[i] for i in missing]
        found = await _packed(redis, [("EVAL", s.source, len(k), *k, *a) for s, k, a in again])
        for i, reply in zip(missing, found, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def _packed(redis: RedisClient, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` packed in one write on one pooled connection and read every reply.

    The same single round trip as a non-transactional pipeline, without its per-command
    machinery (options, callbacks, response handling: ~20-25 µs a command here, more than the
    scripts' own work; BENCHMARKS.md, *The routes lookup per hash slot*). An error reply is
    returned in its place, so every reply is read and the connection stays in step; a failure
    of the connection itself drops it and raises.
    """
    if isinstance(redis, RedisCluster):
        # (EVALSHA|EVAL, script, numkeys, first key, ...): every key of a call is in one slot.
        return await packed_by_node(redis, commands, [c[3] if c[2] else None for c in commands])
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        return await _exchange(connection, commands)
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)


async def _exchange(connection: Any, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Write ``commands`` packed in one write on ``connection`` and read every reply, an error
    reply in its place (the connection stays in step); the caller owns the connection."""
    await connection.send_packed_command(connection.pack_commands(commands))
    replies: list[Any] = []
    for _ in commands:
        try:
            replies.append(await connection.read_response())
        except ResponseError as exc:
            replies.append(exc)
    return replies


async def packed_by_node(
    redis: RedisCluster, commands: list[tuple[Any, ...]], keys: Sequence[str | None]
) -> list[Any]:
    """:func:`_packed` on a cluster: each command goes to the node owning ``keys[i]``'s slot
    (the command's keys must all share it; None: any node), one packed write per node, the
    nodes concurrently; then the redirected ones again through the client (module docstring).
    An error reply is returned in its place."""
    await redis.initialize()  # the slot map: loaded once, refreshed when an error asked for it
    by_node: dict[ClusterNode, list[int]] = {}
    for i, key in enumerate(keys):
        node = redis.get_default_node() if key is None else redis.get_node_from_key(key)
        assert node is not None
        by_node.setdefault(node, []).append(i)
    replies: list[Any] = [None] * len(commands)

    async def on_node(node: ClusterNode, indexes: list[int]) -> None:
        answers = await _packed_on_node(redis, node, [commands[i] for i in indexes])
        for i, answer in zip(indexes, answers, strict=True):
            replies[i] = answer

    if len(by_node) == 1:
        [(node, indexes)] = by_node.items()
        await on_node(node, indexes)
    else:
        await asyncio.gather(*(on_node(node, indexes) for node, indexes in by_node.items()))
    redirected = [i for i, reply in enumerate(replies) if isinstance(reply, _REDIRECTED)]
    if redirected:
        again = await asyncio.gather(*(_one(redis, commands[i]) for i in redirected))
        for i, reply in zip(redirected, again, strict=True):
            replies[i] = reply
    return replies


async def _packed_on_node(
    redis: RedisCluster, node: ClusterNode, commands: list[tuple[Any, ...]]
) -> list[Any]:
    connection = node.acquire_connection()
    try:
        return await _exchange(connection, commands)
    except BaseException as exc:
        await connection.disconnect()
        if isinstance(exc, (ConnectionError, RedisTimeoutError, OSError)):
            # The node may be gone (its replica taking over): the next call refreshes the map,
            # as the client's own commands ask after a connection error (redis-py >= 8.2).
            redis._request_refresh(last_failed_node_name=node.name)
        raise
    finally:
        node.release(connection)


async def _one(redis: RedisCluster, command: tuple[Any, ...]) -> Any:
    """One call through the cluster client (it follows redirections); an error reply is
    returned in its place, as :func:`_packed` does."""
    try:
        return await redis.execute_command(*command)
    except ResponseError as exc:
        return exc


async def read_stream(
    redis: RedisClient, stream: str, last_id: str, *, count: int, block_ms: int
) -> Any:
    """``XREAD COUNT count BLOCK block_ms STREAMS stream last_id``, the reply as ``xread``'s.

    On a cluster the call goes straight to the node owning the stream's slot. redis-py cannot
    find XREAD's key from the command's key specs, so it would ask its default node
    (``COMMAND GETKEYS``) before every read: a round trip more per read, and a read that stalls
    while that node is down even though the stream's own node is up (a node whose stream was on
    a live shard went unready while another shard failed over).
    """
    if not isinstance(redis, RedisCluster):
        return await redis.xread({stream: last_id}, count=count, block=block_ms)
    await redis.initialize()  # the slot map: loaded once, refreshed when an error asked for it
    node = redis.get_node_from_key(stream)
    return await redis.execute_command(
        "XREAD", "COUNT", count, "BLOCK", block_ms, "STREAMS", stream, last_id, target_nodes=node
    )

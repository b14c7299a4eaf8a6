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
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError, ResponseError

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


#: One script call: the script, its keys (all in one hash slot), its arguments.
Call = tuple[LuaScript, Sequence[str], Sequence[Arg]]


async def eval_scripts(redis: Redis, calls: Sequence[Call]) -> list[Any]:
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


async def _packed(redis: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` packed in one write on one pooled connection and read every reply.

    The same single round trip as a non-transactional pipeline, without its per-command
    machinery (options, callbacks, response handling: ~20-25 µs a command here, more than the
    scripts' own work; BENCHMARKS.md, *The routes lookup per hash slot*). An error reply is
    returned in its place, so every reply is read and the connection stays in step; a failure
    of the connection itself drops it and raises.
    """
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(connection.pack_commands(commands))
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        await connection.disconnect()
        raise
    finally:
        await pool.release(connection)
    return replies

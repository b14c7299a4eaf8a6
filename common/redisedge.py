"""The Redis edge's two shared rules: which exceptions mean "Redis could not answer", and how
Lua scripts are called in a pipeline.

:data:`REDIS_FAILURES` is the one tuple realtime and the API catch at their Redis adapters
(a redis error, a socket error, a timeout of the client or of ``asyncio.wait_for``); nothing
above an adapter catches a redis type.

:func:`eval_scripts` sends many single-slot script calls in one non-transactional pipeline by
SHA. redis-py's ``Script`` inside a pipeline sends ``SCRIPT EXISTS`` before every execute (one
more round trip each time); here a script unknown to the server (``NOSCRIPT``: a restart, a
``SCRIPT FLUSH``) is sent again in full for the calls that failed, in a second pipeline, and
never for the calls that ran, so a write is not repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

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
    """The replies of ``calls``, in order, from one pipeline (two if a script was unknown).

    Raises the first error reply, or the client's failure, like ``execute`` does.
    """
    if not calls:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for script, keys, args in calls:
            pipe.evalsha(script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if missing:
        async with redis.pipeline(transaction=False) as pipe:
            for i in missing:
                script, keys, args = calls[i]
                pipe.eval(script.source, len(keys), *keys, *args)
            for i, reply in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies

"""Client CPU of one routes lookup, the broker's per-tick Redis call: the single ``ROUTES_LUA``
call over every recipient's key (the layout before hash tags) against the grouped single-slot
calls in one pipeline (``realtime.broker`` since the tags). No routes exist, so Redis answers
empty and the figure is the client's cost: packing, the pipeline, parsing.

    .venv/bin/python -m loadtest.routes_cost redis://127.0.0.1:56379/5 3000
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

import uvloop
from redis.asyncio import Redis

from common.redisedge import Call, eval_scripts
from common.rediskeys import by_user_group, route_key
from realtime.broker import ROUTES, ROUTES_LUA

SIZES = (1, 2, 8, 32, 200)


def grouped(users: list[int]) -> list[Call]:
    return [
        (ROUTES, [route_key(u) for u in members], ("me", 0)) for members in by_user_group(users)
    ]


async def best_of_three(run: Callable[[], Awaitable[object]], n: int) -> float:
    for _ in range(200):
        await run()
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        for _ in range(n):
            await run()
        best = min(best, (time.process_time() - start) / n * 1e6)
    return best


async def main(url: str, n: int) -> None:
    redis = Redis.from_url(url)
    single = redis.register_script(ROUTES_LUA)
    for size in SIZES:
        users = list(range(1000, 1000 + size))

        async def one_call(users: list[int] = users) -> object:
            keys = [f"mm:user:{u}:routes" for u in users]
            return await single(keys=keys, args=["me", 0])

        async def per_slot(users: list[int] = users) -> object:
            return await eval_scripts(redis, grouped(users))

        before, after = await best_of_three(one_call, n), await best_of_three(per_slot, n)
        print(f"{size:>4} users | one call {before:6.1f} µs | grouped {after:6.1f} µs")
    await redis.aclose()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 3000))

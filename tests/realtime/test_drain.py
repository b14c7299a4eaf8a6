"""SIGTERM drains a node under traffic: clients get 1012, reconnect to the other node, resend
what was not acked with the same cmid, and every acked message is in PostgreSQL exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import asyncpg
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from common.codes import Close
from common.rediskeys import NODES, route_key
from tests.realtime.conftest import client, start_node
from tests.support import TICK

PER_SENDER = 40
ENV = {"MM_PRESENCE_GRACE_S": str(4 * TICK), "MM_PRESENCE_TTL_S": str(40 * TICK)}


async def test_sigterm_under_traffic_loses_no_acked_message_and_clients_move_over(
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
    db: asyncpg.Pool[asyncpg.Record],
    redis: Redis,
) -> None:
    draining, other = start_node("da", **ENV), start_node("db", **ENV)
    urls = [f"ws://127.0.0.1:{p.port}/" for p in (draining, other)]
    try:
        senders = [await new_user() for _ in range(3)]
        peer = await new_user()
        cids = [await new_conversation(s, peer) for s in senders]
        acked: dict[int, set[str]] = {s: set() for s in senders}
        closes: list[int] = []
        # The drain starts once every sender is past its sixth ack: a sender still opening its
        # first socket when the node starts draining would be refused, not moved over.
        started = asyncio.Event()
        past_five: set[int] = set()

        async def run(sender: int, cid: int) -> None:
            c = await client(urls[0], make_token(sender))
            for i in range(PER_SENDER):
                cmid = f"s{sender}-{i}"
                for _attempt in range(5):
                    try:
                        await c.send_msg(cid, f"body {i}", cmid=cmid)
                        await c.expect("ack", cmid=cmid)
                        acked[sender].add(cmid)
                        break
                    except ConnectionClosed as exc:
                        assert exc.rcvd is not None
                        closes.append(exc.rcvd.code)
                        # Reconnect elsewhere; the same cmid settles the unknown outcome.
                        c = await client(urls[1], make_token(sender))
                if i == 5:
                    past_five.add(sender)
                    if len(past_five) == len(senders):
                        started.set()
            await c.close()

        tasks = [asyncio.create_task(run(s, cid)) for s, cid in zip(senders, cids, strict=True)]
        await asyncio.wait_for(started.wait(), 100 * TICK)
        draining.signal(signal.SIGTERM)
        t0 = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), 400 * TICK)
        assert draining.proc is not None
        assert await asyncio.to_thread(draining.proc.wait, 200 * TICK) == 0
        assert time.monotonic() - t0 < 200 * TICK
        # Every sender was moved by the drain code, and finished on the other node.
        assert closes and set(closes) == {Close.SERVICE_RESTART}, closes
        rows = await db.fetch(
            "SELECT sender_id, cmid, count(*) AS n FROM messages "
            "WHERE sender_id = ANY($1::bigint[]) GROUP BY sender_id, cmid",
            senders,
        )
        stored: dict[int, dict[str, int]] = {s: {} for s in senders}
        for row in rows:
            stored[row["sender_id"]][row["cmid"]] = row["n"]
        for sender in senders:
            assert len(acked[sender]) == PER_SENDER
            assert set(stored[sender]) == acked[sender]
            assert set(stored[sender].values()) == {1}
        # The drained node withdrew itself: no heartbeat entry, no routes.
        node_id = f"da-{draining.port}"
        assert await redis.zscore(NODES, node_id) is None
        for sender in senders:
            assert await redis.zscore(route_key(sender), node_id) is None
    finally:
        draining.stop()
        assert other.stop() == 0

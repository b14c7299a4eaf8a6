"""The node's account reads on the real database (realtime/store.py): many at once, one each."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg

from realtime.store import Store


async def test_concurrent_account_reads_share_a_statement_and_get_their_own_copies(
    db: asyncpg.Pool[asyncpg.Record],
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    a, b, c = await new_user(), await new_user(token_version=3), await new_user()
    cid = await new_conversation(a, b)
    await db.execute("INSERT INTO blocks (blocker_id, blocked_id) VALUES ($1, $2)", c, a)
    store = Store(db, timeout_s=5.0)
    try:
        (sa, ma), (sa2, ma2), (sb, mb), (sc, mc), (nobody, mn) = await asyncio.gather(
            store.account(a),
            store.account(a),
            store.account(b),
            store.account(c),
            store.account(10**15),
        )
    finally:
        await store.close()
    assert store.accounts.calls == 1  # five asks, four users, one statement
    assert sa == sa2 and sa is not None and sb is not None and sc is not None
    assert (sa.token_version, sb.token_version, sa.disabled) == (0, 3, False)
    assert (ma.peers, mb.peers, mc.peers) == ({cid: (b,)}, {cid: (a,)}, {})
    assert (ma.blocked, mb.blocked, mc.blocked) == (frozenset({c}), frozenset(), frozenset({a}))
    # One user's two sockets each edit their own cache (the protocol applies events to it).
    assert ma is not ma2 and ma.peers is not ma2.peers
    ma.peers.pop(cid)
    assert ma2.peers == {cid: (b,)}
    assert nobody is None and mn.peers == {}

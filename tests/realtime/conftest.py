"""Two real realtime nodes (child processes on free ports) and the data the tests drive them with.

Users and conversations are inserted straight into the test database; tokens come from the
``make_token`` fixture. The nodes' settings, ``start_node`` and the test client are in
``tests/realtime/support.py``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from redis.asyncio import Redis

from common.settings import Settings
from tests.realtime.support import (
    WAIT,
    Client,
    Nodes,
    client,
    open_client,
    start_node,
    sync_all,
)

# Re-exported for the test modules that import them from here.
__all__ = ["WAIT", "Client", "Nodes", "client", "open_client", "start_node", "sync_all"]


@pytest.fixture(scope="session")
def nodes(settings: Settings, redis: Redis) -> Iterator[Nodes]:
    """Node A and node B: separate processes, ids and delivery streams, one Redis and DB."""
    procs = [start_node("a"), start_node("b")]
    try:
        yield Nodes(*(f"ws://127.0.0.1:{p.port}/" for p in procs))
    finally:
        for proc in procs:
            assert proc.stop() == 0, f"node did not stop cleanly, see {proc.log_path}"


@pytest.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    pool = await asyncpg.create_pool(settings.asyncpg_dsn, min_size=1, max_size=4)
    yield pool
    await pool.close()


_emails = itertools.count()


@pytest.fixture
def new_user(db: asyncpg.Pool[asyncpg.Record]) -> Callable[..., Any]:
    async def make(token_version: int = 0) -> int:
        email = f"rt{next(_emails)}-{secrets.token_hex(4)}@example.test"
        user_id = await db.fetchval(
            "INSERT INTO users (email, password_hash, token_version) VALUES ($1, 'x', $2) "
            "RETURNING id",
            email,
            token_version,
        )
        return int(user_id)

    return make


@pytest.fixture
def new_conversation(db: asyncpg.Pool[asyncpg.Record]) -> Callable[..., Any]:
    async def make(*members: int, closed: bool = False) -> int:
        """An open conversation of ``members``, or a closed one (as an unmatch leaves it)."""
        cid = int(
            await db.fetchval(
                "INSERT INTO conversations (closed_at) "
                "VALUES (CASE WHEN $1 THEN now() END) RETURNING id",
                closed,
            )
        )
        await db.executemany(
            "INSERT INTO conversation_members (conversation_id, user_id) VALUES ($1, $2)",
            [(cid, m) for m in members],
        )
        return cid

    return make

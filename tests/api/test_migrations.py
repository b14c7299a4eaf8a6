"""Data migrations on a database of their own: the interest catalogue is there without the seed."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from alembic import command
from api.seed import INTERESTS
from tests.conftest import TEST_DB, TEST_DB_URL, _with_path, alembic_config

SCRATCH_DB = f"{TEST_DB}_migrations"
SCRATCH_URL = _with_path(TEST_DB_URL, f"/{SCRATCH_DB}")
# A database of its own on the test PostgreSQL, reached without a fixture.
pytestmark = pytest.mark.integration


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_with_path(TEST_DB_URL, "/postgres").replace("+asyncpg", ""))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _catalogue() -> dict[str, str]:
    connection = await asyncpg.connect(SCRATCH_URL.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch("SELECT slug, label FROM interests")
    finally:
        await connection.close()
    return {row["slug"]: row["label"] for row in rows}


async def test_interest_catalogue_migration_up_and_down() -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{SCRATCH_DB}"')
    try:
        config = alembic_config(SCRATCH_URL)
        # alembic's env runs its own event loop: keep it off this test's loop.
        await asyncio.to_thread(command.upgrade, config, "head")
        catalogue = await _catalogue()
        # Everything the development seed offers is in every migrated database, same labels.
        assert {slug: catalogue.get(slug) for slug in INTERESTS} == {
            slug: slug.replace("-", " ").title() for slug in INTERESTS
        }
        await asyncio.to_thread(command.downgrade, config, "0001")
        assert await _catalogue() == {}
        await asyncio.to_thread(command.upgrade, config, "head")  # and again: idempotent
        assert len(await _catalogue()) == len(catalogue)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')


async def _scratch(sql: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(SCRATCH_URL.replace("+asyncpg", ""))
    try:
        return await connection.fetch(sql, *args)
    finally:
        await connection.close()


async def test_insert_mostly_write_path_migration_keeps_what_the_dropped_columns_said() -> None:
    """0005 drops last_seq, last_message_at and unread_count (derived at read time since); its
    downgrade puts them back filled from the messages, and the upgrade again numbers after them."""
    await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{SCRATCH_DB}"')
    try:
        config = alembic_config(SCRATCH_URL)
        await asyncio.to_thread(command.upgrade, config, "head")
        [a, b] = [
            r[0]
            for r in await _scratch(
                "INSERT INTO users (email, password_hash) VALUES ('a@x.test', 'x'), "
                "('b@x.test', 'x') RETURNING id"
            )
        ]
        [[cid]] = await _scratch("INSERT INTO conversations DEFAULT VALUES RETURNING id")
        await _scratch(
            "INSERT INTO conversation_members (conversation_id, user_id) VALUES ($1, $2), ($1, $3)",
            cid,
            a,
            b,
        )
        sends = await _scratch(
            "SELECT status, seq FROM mm_commit_batch($1, $2, $3, $4, $5, '{}', '{}', '{}')",
            [cid] * 3,
            [a, a, b],
            ["m1", "m2", "m3"],
            ["one", "two", "three"],
            ["text"] * 3,
        )
        assert [tuple(r) for r in sends] == [(0, 1), (0, 2), (0, 3)]
        await _scratch(
            "UPDATE messages SET deleted_at = now() WHERE conversation_id = $1 AND seq = 2", cid
        )

        await asyncio.to_thread(command.downgrade, config, "0004_commit_batch_key_probes")
        [conversation] = await _scratch(
            "SELECT c.last_seq, c.last_message_at = m.created_at AS at_newest FROM conversations c"
            " JOIN messages m ON m.conversation_id = c.id AND m.seq = 3 WHERE c.id = $1",
            cid,
        )
        assert tuple(conversation) == (3, True)
        unread = await _scratch(
            "SELECT user_id, unread_count FROM conversation_members WHERE conversation_id = $1",
            cid,
        )
        # b: a's two messages, one deleted -> 1; a: b's one.
        assert {r["user_id"]: r["unread_count"] for r in unread} == {a: 1, b: 1}

        await asyncio.to_thread(command.upgrade, config, "head")
        [[status, seq]] = await _scratch(
            "SELECT status, seq FROM mm_commit_batch($1, $2, $3, $4, $5, '{}', '{}', '{}')",
            [cid],
            [b],
            ["m4"],
            ["four"],
            ["text"],
        )
        assert (status, seq) == (0, 4)
        dropped = await _scratch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE column_name IN ('last_seq', 'last_message_at', 'unread_count')"
        )
        assert dropped == []
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

"""Data migrations on a database of their own: rows survive each one, up and down."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from alembic import command
from api.seed import INTERESTS
from common.models import MESSAGE_PARTITIONS
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


async def _two_users() -> tuple[int, int]:
    [a, b] = await _scratch(
        "INSERT INTO users (email, password_hash) VALUES ('a@x.test', 'x'), ('b@x.test', 'x')"
        " RETURNING id"
    )
    return int(a[0]), int(b[0])


async def test_insert_mostly_write_path_migration_keeps_what_the_dropped_columns_said() -> None:
    """0005 drops last_seq, last_message_at and unread_count (derived at read time since); its
    downgrade puts them back filled from the messages, and the upgrade again numbers after them."""
    await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{SCRATCH_DB}"')
    try:
        config = alembic_config(SCRATCH_URL)
        await asyncio.to_thread(command.upgrade, config, "head")
        a, b = await _two_users()
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


async def test_partitioned_messages_migration_moves_the_rows_both_ways() -> None:
    """0007 moves the messages into hash partitions with the per-conversation resend key, and
    its downgrade back into the plain table: the same rows, ids and sequence position both
    ways; the downgrade refuses what 0006's ``(sender_id, cmid)`` key cannot hold."""
    await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{SCRATCH_DB}"')
    try:
        config = alembic_config(SCRATCH_URL)
        await asyncio.to_thread(command.upgrade, config, "0006_message_notifications")
        a, b = await _two_users()
        cids = [
            r[0]
            for r in await _scratch(
                "INSERT INTO conversations SELECT FROM generate_series(1, 20) RETURNING id"
            )
        ]
        await _scratch(
            "INSERT INTO conversation_members (conversation_id, user_id)"
            " SELECT c, u FROM unnest($1::bigint[]) c, unnest($2::bigint[]) u",
            cids,
            [a, b],
        )
        sends = await _scratch(
            "SELECT status FROM mm_commit_batch($1, $2, $3, $4, $5, '{}', '{}', '{}')",
            [c for c in cids for _ in range(3)],
            [a, b, a] * len(cids),
            [f"m{c}-{i}" for c in cids for i in range(3)],
            ["body"] * 3 * len(cids),
            ["text"] * 3 * len(cids),
        )
        assert {r[0] for r in sends} == {0}
        await _scratch("UPDATE messages SET deleted_at = now() WHERE seq = 2")
        everything = "SELECT * FROM messages ORDER BY conversation_id, seq"
        before = [tuple(r) for r in await _scratch(everything)]
        assert len(before) == 60

        await asyncio.to_thread(command.upgrade, config, "head")
        assert [tuple(r) for r in await _scratch(everything)] == before
        partitions = await _scratch(
            "SELECT c.relname, count(m.*) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid"
            " LEFT JOIN messages m ON m.tableoid = c.oid"
            " WHERE i.inhparent = 'messages'::regclass GROUP BY c.relname ORDER BY c.relname"
        )
        assert [r[0] for r in partitions] == [f"messages_p{r}" for r in range(MESSAGE_PARTITIONS)]
        assert sum(r[1] for r in partitions) == 60 and max(r[1] for r in partitions) < 60
        # The id sequence went on where it was; the new key lets a cmid repeat elsewhere.
        [[status, seq, msg_id]] = await _scratch(
            "SELECT status, seq, msg_id FROM mm_commit_batch($1, $2, $3, $4, $5, '{}', '{}', '{}')",
            [cids[1]],
            [a],
            [f"m{cids[0]}-0"],
            ["body"],
            ["text"],
        )
        assert (status, seq, msg_id) == (0, 4, max(r[2] for r in before) + 1)
        with pytest.raises(Exception, match="cannot downgrade 0007: 1 "):
            await asyncio.to_thread(command.downgrade, config, "0006_message_notifications")
        [[kind]] = await _scratch("SELECT relkind::text FROM pg_class WHERE relname = 'messages'")
        assert kind == "p"  # the refused downgrade changed nothing
        await _scratch("DELETE FROM messages WHERE id = $1", msg_id)

        await asyncio.to_thread(command.downgrade, config, "0006_message_notifications")
        assert [tuple(r) for r in await _scratch(everything)] == before
        keys = await _scratch(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'messages'::regclass"
            " AND contype IN ('p', 'u') ORDER BY conname"
        )
        assert [r[0] for r in keys] == ["pk_messages", "uq_messages_id", "uq_messages_sender_cmid"]
        [[kind]] = await _scratch("SELECT relkind::text FROM pg_class WHERE relname = 'messages'")
        assert kind == "r"
        # 0005's function again: the old key, the sequence still ahead of every id.
        again = await _scratch(
            "SELECT status, msg_id FROM mm_commit_batch($1, $2, $3, $4, $5, '{}', '{}', '{}')",
            [cids[1], cids[0]],
            [a, b],
            [f"m{cids[0]}-0", "fresh"],
            ["body", "x"],
            ["text", "text"],
        )
        assert [r[0] for r in again] == [2, 0]  # another conversation: a conflict under 0006
        assert again[1][1] > msg_id
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

"""Every reader and the writer of ``messages`` read one partition by key (migration 0007).

``messages`` is hash-partitioned on ``conversation_id``. A statement that names the key reads
one partition: pruned when planned for its values (the API's first executions), or at run time,
per conversation, on a generic plan (every node statement; the API's later executions). These
run the real statements (the node's batch function and sync page with the node's session
settings, the API's history and conversation list through its services) on a private database
seeded across all partitions, with ``auto_explain`` sending each executed plan back as JSON
(:mod:`loadtest.explain`), and check that each read of ``messages`` ran exactly one
partition's index scan per execution and never a sequential scan. The plan reader itself is
checked on hand-made plans, so a reader that always says "one partition" cannot pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from alembic import command
from api.services import conversations
from common.models import MESSAGE_PARTITIONS
from loadtest.explain import PartitionRead, auto_explained, json_plans, partition_reads
from realtime.batch import COMMIT_SQL
from realtime.store import SYNC_SQL, create_pool
from tests.db_support import TEST_DB, TEST_DB_URL, alembic_config, recreate_database

PARTITIONS = frozenset(f"messages_p{r}" for r in range(MESSAGE_PARTITIONS))
#: Conversations of the seeded user (each with its own other member) and messages in each;
#: other people's conversations, and messages in each (most of the table is not the user's).
CONVERSATIONS = 40
MESSAGES = 200
ELSEWHERE = 800
ELSEWHERE_MESSAGES = 50

SEED = f"""
WITH me AS (
    INSERT INTO users (email, password_hash) VALUES ('me@plans.test', 'x') RETURNING id
), others AS (
    INSERT INTO users (email, password_hash)
    SELECT 'u' || i || '@plans.test', 'x' FROM generate_series(1, {CONVERSATIONS}) i
    RETURNING id
), profiles AS (
    INSERT INTO profiles (user_id, display_name, birth_date, gender)
    SELECT id, 'other', date '1990-01-01', 'woman' FROM others
), cs AS (
    INSERT INTO conversations SELECT FROM generate_series(1, {CONVERSATIONS}) RETURNING id
), pairs AS (
    SELECT c.id AS cid, o.id AS other
    FROM (SELECT id, row_number() OVER (ORDER BY id) n FROM cs) c
    JOIN (SELECT id, row_number() OVER (ORDER BY id) n FROM others) o USING (n)
), members AS (
    INSERT INTO conversation_members (conversation_id, user_id)
    SELECT cid, me.id FROM pairs, me UNION ALL SELECT cid, other FROM pairs
), mine AS (
    INSERT INTO messages (conversation_id, seq, sender_id, cmid, body)
    SELECT p.cid, s, CASE WHEN s % 2 = 0 THEN me.id ELSE p.other END, 'c' || p.cid || '-' || s,
           'message ' || s
    FROM pairs p, me, generate_series(1, {MESSAGES}) s
), elsewhere AS (
    INSERT INTO conversations SELECT FROM generate_series(1, {ELSEWHERE}) RETURNING id
)
INSERT INTO messages (conversation_id, seq, sender_id, cmid, body)
SELECT e.id, s, o.id, 'e' || e.id || '-' || s, 'elsewhere ' || s
FROM elsewhere e, (SELECT min(id) AS id FROM others) o, generate_series(1, {ELSEWHERE_MESSAGES}) s
"""


@dataclass(frozen=True)
class Seeded:
    dsn: str
    url: str
    me: int
    #: The seeded conversations, and the partition each one's rows are in.
    partition_of: dict[int, str]


@pytest.fixture(scope="module")
def seeded(_database: None) -> Iterator[Seeded]:
    """A database of its own beside the suite's (which makes these integration tests)."""
    name = f"{TEST_DB}_partitions"
    url = asyncio.run(recreate_database(TEST_DB_URL, name))
    dsn = url.replace("+asyncpg", "")
    try:
        command.upgrade(alembic_config(url), "head")

        async def seed() -> Seeded:
            con = await asyncpg.connect(dsn)
            try:
                await con.execute(SEED)
                await con.execute("ANALYZE")
                me = await con.fetchval("SELECT id FROM users WHERE email = 'me@plans.test'")
                rows = await con.fetch(
                    "SELECT DISTINCT m.conversation_id, m.tableoid::regclass::text"
                    " FROM messages m JOIN conversation_members me"
                    " ON me.conversation_id = m.conversation_id AND me.user_id = $1",
                    me,
                )
            finally:
                await con.close()
            return Seeded(dsn, url, int(me), {int(r[0]): str(r[1]) for r in rows})

        yield asyncio.run(seed())
    finally:
        asyncio.run(recreate_database(TEST_DB_URL, name, create=False))


def _spread(seeded: Seeded, n: int) -> list[int]:
    """``n`` seeded conversations in ``n`` different partitions."""
    chosen: dict[str, int] = {}
    for cid, partition in sorted(seeded.partition_of.items()):
        chosen.setdefault(partition, cid)
    assert len(chosen) >= n, "the seed should reach every partition"
    return sorted(chosen.values())[:n]


def _reads(messages: list[str], needle: str) -> list[PartitionRead]:
    """The reads of ``messages`` in the executed plans whose query text holds ``needle``."""
    plans = [doc for doc in json_plans(messages) if needle in doc["Query Text"]]
    assert plans, f"no executed plan of {needle!r} in {len(messages)} messages"
    return [read for doc in plans for read in partition_reads(doc["Plan"], PARTITIONS)]


def _assert_keyed(reads: list[PartitionRead], expected: set[str] | None = None) -> None:
    """Each read ran one partition's index lookup on ``conversation_id`` per execution, never
    a sequential scan; and together they ran exactly the ``expected`` partitions."""
    assert reads, "the statement should read messages"
    for read in reads:
        assert read.by_index and read.keyed_on("conversation_id"), read
        assert read.one_partition_per_loop, read
    if expected is not None:
        ran = {scan.relation for read in reads for scan in read.executed}
        assert ran == expected


async def _as_a_node(seeded: Seeded, sql: str, *args: Any) -> tuple[list[Any], list[str]]:
    """``sql`` run on a connection with a node's settings (``realtime.store.create_pool``):
    its rows and ``auto_explain``'s messages (the function's inner statements included)."""
    pool = await create_pool(seeded.dsn, max_size=1, timeout_s=5.0)
    try:
        async with (
            pool.acquire() as con,
            auto_explained(con, nested=True, json_format=True) as messages,
        ):
            rows = await con.fetch(sql, *args)
    finally:
        await pool.close()
    return list(rows), messages


async def test_the_batch_function_reads_one_partition_per_key(seeded: Seeded) -> None:
    """Sends to three conversations in three partitions, and receipts: the top-seq probe reads
    only its conversation's partition, once per conversation (the node's generic plans: pruned
    at run time, per row), and nothing reads the resend key."""
    cids = _spread(seeded, 3)
    rows, messages = await _as_a_node(
        seeded,
        COMMIT_SQL,
        [cids[0], cids[0], cids[1], cids[2]],
        [seeded.me] * 4,
        ["new-a1", "new-a2", "new-b", "new-c"],
        ["a1", "a2", "b", "c"],
        ["text"] * 4,
        [cids[1], cids[2]],
        [seeded.me] * 2,
        [5, 7],
        False,
    )
    assert [(r["status"], r["seq"]) for r in rows] == [
        (0, MESSAGES + 1),
        (0, MESSAGES + 2),
        (0, MESSAGES + 1),
        (0, MESSAGES + 1),
        (0, 5),
        (0, 7),
    ]
    assert not [m for m in messages if "x.cmid = k.cmid" in m], "no call without probe reads it"
    sends = _reads(messages, "coalesce(known[k.i]")
    _assert_keyed(sends, {seeded.partition_of[cid] for cid in cids})
    # The top-seq read runs per row, its partition's scan once per conversation: a gating
    # ``Result`` over each partition's scan skips it on the second row of cids[0].
    assert [(read.loops, read.scans_run) for read in sends] == [(4, 3)]
    receipts = _reads(messages, "UPDATE conversation_members")
    _assert_keyed(receipts, {seeded.partition_of[cid] for cid in cids[1:]})


async def test_the_probe_reads_one_partition_per_send(seeded: Seeded) -> None:
    """The call after a unique violation (``probe``) looks every send's resend key up in its
    conversation's partition, once per row, and answers the resend with its stored place."""
    cids = _spread(seeded, 2)
    rows, messages = await _as_a_node(
        seeded,
        COMMIT_SQL,
        [cids[0], cids[1], cids[1]],
        [seeded.me] * 3,
        [f"c{cids[0]}-2", "probe-b1", "probe-b2"],  # the first: a resend
        ["message 2", "b1", "b2"],
        ["text"] * 3,
        [],
        [],
        [],
        True,
    )
    assert [r["status"] for r in rows] == [1, 0, 0]
    assert rows[0]["seq"] == 2 and rows[2]["seq"] == rows[1]["seq"] + 1
    probes = _reads(messages, "x.cmid = k.cmid")
    _assert_keyed(probes, {seeded.partition_of[cid] for cid in cids})
    assert [(read.loops, read.scans_run) for read in probes] == [(3, 3)]


async def test_sync_reads_one_partition_per_conversation(seeded: Seeded) -> None:
    cids = _spread(seeded, 3)
    page, messages = await _as_a_node(seeded, SYNC_SQL, cids, [0, 10, 20], 4 * MESSAGES, seeded.me)
    # Rows may include the batch test's new messages; each conversation's from its position.
    assert {cid: min(r[1] for r in page if r[0] == cid) for cid in cids} == dict(
        zip(cids, [1, 11, 21], strict=True)
    )
    _assert_keyed(_reads(messages, "FROM messages x"), {seeded.partition_of[c] for c in cids})


@pytest.fixture
async def sessions(seeded: Seeded) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_async_engine(seeded.url)
    yield async_sessionmaker(engine, expire_on_commit=False)
    await engine.dispose()


@pytest.mark.parametrize("plan_mode", ["auto", "force_generic_plan"])
async def test_rest_history_and_the_conversation_list_read_one_partition_per_conversation(
    seeded: Seeded, sessions: async_sessionmaker[AsyncSession], plan_mode: str
) -> None:
    """The API's history pages (newest, before, after) read the conversation's partition; the
    conversation list's unread counts, top seq, last message time and preview read one partition
    per conversation. ``auto``: planned for the values (the first five executions of a prepared
    statement); ``force_generic_plan``: the generic plan PostgreSQL may switch to after."""
    cid = _spread(seeded, 1)[0]
    async with sessions() as session:
        await session.execute(text(f"SET LOCAL plan_cache_mode = {plan_mode}"))
        driver: Any = (await (await session.connection()).get_raw_connection()).driver_connection
        async with auto_explained(driver, local=True, json_format=True) as messages:
            pages = [
                await conversations.history(
                    session, user_id=seeded.me, conversation_id=cid, **cursor, limit=10
                )
                for cursor in ({"before": None, "after": None}, {"before": 15, "after": None})
            ]
            after = await conversations.history(
                session, user_id=seeded.me, conversation_id=cid, before=None, after=3, limit=10
            )
            listed = await conversations.list_conversations(
                session, user_id=seeded.me, cursor=None, limit=CONVERSATIONS
            )
        await session.rollback()
    assert [m.seq for m in pages[1].messages] == list(range(5, 15))
    assert [m.seq for m in after.messages] == list(range(4, 14))
    assert pages[0].messages[-1].seq >= MESSAGES
    assert len(listed.items) == CONVERSATIONS
    assert all(item.unread_count > 0 for item in listed.items)
    history_reads = _reads(messages, "WHERE messages.conversation_id = $1::BIGINT")
    _assert_keyed(history_reads, {seeded.partition_of[cid]})
    listing = _reads(messages, "AS activity, conversation_members_1.last_read_seq")
    _assert_keyed(listing)
    # The list reads several derived values of each conversation, each in its partition.
    assert sum(read.loops for read in listing) >= 3 * CONVERSATIONS


def _node(kind: str, relation: str, ran: int) -> dict[str, Any]:
    cond = {"Index Cond": "(conversation_id = $1)"}
    node: dict[str, Any] = {"Node Type": kind, "Relation Name": relation, "Actual Loops": ran}
    if kind == "Bitmap Heap Scan":
        node["Plans"] = [{"Node Type": "Bitmap Index Scan", **cond}]
    elif kind != "Seq Scan":
        node.update(cond)
    return node


def _read(loops: int, *scans: tuple[str, str, int]) -> PartitionRead:
    plan = {"Node Type": "Append", "Actual Loops": loops, "Plans": [_node(*s) for s in scans]}
    [read] = partition_reads({"Node Type": "Limit", "Plans": [plan]}, PARTITIONS)
    return read


def test_the_plan_reader_tells_a_keyed_read_from_a_scan_of_every_partition() -> None:
    pruned = _read(2, ("Index Scan", "messages_p0", 1), ("Index Only Scan", "messages_p1", 1))
    assert pruned.by_index and pruned.one_partition_per_loop
    assert [scan.relation for scan in pruned.executed] == ["messages_p0", "messages_p1"]
    every = _read(1, ("Index Scan", "messages_p0", 1), ("Index Scan", "messages_p1", 1))
    assert every.by_index and not every.one_partition_per_loop
    seq = _read(1, ("Seq Scan", "messages_p0", 1), ("Index Scan", "messages_p1", 0))
    assert not seq.by_index and seq.one_partition_per_loop
    bitmap = _read(1, ("Bitmap Heap Scan", "messages_p0", 1))
    assert bitmap.by_index and bitmap.keyed_on("conversation_id")
    assert not bitmap.keyed_on("sender_id")

    def gated(loops: int, *gates: tuple[str, int, int]) -> PartitionRead:
        plans = [
            {
                "Node Type": "Result",
                "Actual Loops": ran,
                "Plans": [_node("Index Scan", rel, scanned)],
            }
            for rel, ran, scanned in gates
        ]
        [read] = partition_reads(
            {"Node Type": "Merge Append", "Actual Loops": loops, "Plans": plans}, PARTITIONS
        )
        return read

    # Pruned per row, the gate skipping one scan: one partition picked per loop, one scan run.
    skipped = gated(2, ("messages_p1", 2, 1), ("messages_p2", 0, 0))
    assert (skipped.loops, skipped.scans_run, skipped.by_index) == (2, 1, True)
    assert skipped.one_partition_per_loop
    # Not pruned: both partitions' gates ran on each loop, whatever the gates let through.
    unpruned = gated(2, ("messages_p1", 2, 0), ("messages_p2", 2, 1))
    assert not unpruned.one_partition_per_loop
    direct = partition_reads(_node("Index Scan", "messages_p3", 1), PARTITIONS)
    assert [(read.loops, read.executed[0].relation) for read in direct] == [(1, "messages_p3")]
    assert partition_reads({"Node Type": "Seq Scan", "Relation Name": "users"}, PARTITIONS) == []

"""The batch writer against the real database: every outcome of one ``mm_commit_batch`` call.

These drive :meth:`BatchWriter.flush` directly (no node), so one batch can hold every case at
once: new messages, resends, copies inside the batch, conflicts, closed and unknown
conversations, receipts, the resend key per conversation, and a key raced in by a writer that
skips the conversation's lock.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest

from common.codes import Err
from common.settings import Settings
from realtime.batch import COMMIT_SQL, BatchWriter, Item, Outcome
from realtime.domain import ReadOutcome, ReadRequest, SendOutcome, SendRequest
from realtime.store import ACCOUNT_SQL, SYNC_SQL, create_pool
from realtime.store import STATEMENTS as STORE_STATEMENTS
from tests.db_support import MEMBER_STATE_SQL, TOP_SEQ_SQL
from tests.support import TICK

UNKNOWN_CID = 10**15


class Nobody:
    """Outcomes are read from :meth:`BatchWriter.flush`'s return value, not from the replier."""

    def send_finished(self, outcome: SendOutcome) -> None:
        pass

    def read_finished(self, outcome: ReadOutcome) -> None:
        pass


def send(sender: int, cid: int, body: str, cmid: str | None = None) -> Item:
    cmid = cmid or f"b{secrets.token_hex(6)}"
    return SendRequest(sender, cid, cmid, body, "text", None, ()), Nobody()


def read(user: int, cid: int, seq: int) -> Item:
    return ReadRequest(user, cid, seq, None, ()), Nobody()


@pytest.fixture
async def w(db: asyncpg.Pool[asyncpg.Record]) -> AsyncIterator[BatchWriter]:
    """A writer never started: tests call ``flush``; ``stop`` gives its connection back."""
    writer = BatchWriter(db, batch_max=100, timeout_s=5.0, on_done=lambda _: None)
    yield writer
    await writer.stop(drain_timeout_s=0)


def placed(outcome: Outcome) -> tuple[int, int, bool]:
    assert isinstance(outcome, SendOutcome) and outcome.stored is not None, outcome
    return outcome.stored.id, outcome.stored.seq, outcome.stored.dup


def error(outcome: Outcome) -> Err | None:
    return outcome.error


async def member_row(db: asyncpg.Pool[asyncpg.Record], cid: int, user: int) -> Any:
    """``(last_read_seq, unread_count)`` as the API derives them."""
    return await db.fetchrow(MEMBER_STATE_SQL, cid, user)


async def top_seq(db: asyncpg.Pool[asyncpg.Record], cid: int) -> int:
    return int(await db.fetchval(TOP_SEQ_SQL, cid))


async def test_one_batch_decides_every_kind_of_send(
    db: asyncpg.Pool[asyncpg.Record],
    w: BatchWriter,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    a, b = await new_user(), await new_user()
    cid, closed = await new_conversation(a, b), await new_conversation(a, b, closed=True)
    [old] = await w.flush([send(a, cid, "earlier", "old")])
    old_id, old_seq, old_dup = placed(old)
    assert (old_seq, old_dup) == (1, False)

    batch = [
        send(a, cid, "one", "k1"),
        send(b, cid, "two", "k2"),
        send(a, cid, "one", "k1"),  # a copy of the first: the same place
        send(b, cid, "not two", "k2"),  # the same key, another body: a conflict
        send(a, cid, "earlier", "old"),  # a resend of a stored message
        send(a, cid, "changed", "old"),  # its key with another body
        send(a, closed, "hi", "k3"),
        send(a, UNKNOWN_CID, "hi", "k4"),
        send(a, cid, "three", "k5"),
    ]
    outcomes = await w.flush(batch)

    first, second = placed(outcomes[0]), placed(outcomes[1])
    assert (first[1:], second[1:]) == ((2, False), (3, False))
    assert placed(outcomes[2]) == (first[0], 2, True)
    assert error(outcomes[3]) == Err.CMID_CONFLICT
    assert placed(outcomes[4]) == (old_id, 1, True)
    assert error(outcomes[5]) == Err.CMID_CONFLICT
    assert error(outcomes[6]) == Err.CONVERSATION_CLOSED
    assert error(outcomes[7]) == Err.NOT_MEMBER
    assert placed(outcomes[8])[1:] == (4, False)
    assert w.committed == 4  # "earlier", "one", "two", "three"
    assert w.reprobes == 1  # the resends met the key once; the probe call settled them

    rows = await db.fetch(
        "SELECT seq, sender_id, cmid, body FROM messages WHERE conversation_id = $1 ORDER BY seq",
        cid,
    )
    assert [tuple(r) for r in rows] == [
        (1, a, "old", "earlier"),
        (2, a, "k1", "one"),
        (3, b, "k2", "two"),
        (4, a, "k5", "three"),
    ]
    assert await top_seq(db, cid) == 4
    in_closed = "SELECT count(*) FROM messages WHERE conversation_id = $1"
    assert await db.fetchval(in_closed, closed) == 0
    # Unread counters count the others' new messages only (resends and refusals add nothing).
    assert (await member_row(db, cid, b))[1] == 3
    assert (await member_row(db, cid, a))[1] == 1


async def test_receipts_keep_the_highest_mark_and_recount_unread(
    db: asyncpg.Pool[asyncpg.Record],
    w: BatchWriter,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    a, b, stranger = await new_user(), await new_user(), await new_user()
    cid, closed = await new_conversation(a, b), await new_conversation(a, b, closed=True)
    await w.flush([send(a, cid, f"m{i}") for i in range(5)])
    assert (await member_row(db, cid, b))[1] == 5

    outcomes = await w.flush(
        [
            read(b, cid, 2),
            read(b, cid, 3),  # the highest mark in the batch wins for both
            read(stranger, cid, 1),
            read(b, closed, 1),
            read(a, cid, 99),  # never past last_seq
        ]
    )
    assert [(o.error, getattr(o, "seq", None)) for o in outcomes] == [
        (None, 3),
        (None, 3),
        (Err.NOT_MEMBER, 0),
        (Err.CONVERSATION_CLOSED, 0),
        (None, 5),
    ]
    assert tuple(await member_row(db, cid, b)) == (3, 2)
    # Marks never move backwards; a send and a receipt in one batch both apply, in order.
    outcomes = await w.flush([read(b, cid, 1), send(a, cid, "m5"), read(b, cid, 6)])
    assert [o.error for o in outcomes] == [None, None, None]
    assert tuple(await member_row(db, cid, b)) == (6, 0)


async def test_a_call_without_probe_stores_nothing_of_a_batch_holding_a_resend(
    db: asyncpg.Pool[asyncpg.Record],
    w: BatchWriter,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    """The first call for a batch does not read the resend key: a resend among new sends fails
    it with ``unique_violation``, and the call (its own transaction) stores none of them, so
    the writer's call with ``probe`` numbers the new ones from the same top, gapless."""
    a, b = await new_user(), await new_user()
    cid = await new_conversation(a, b)
    await w.flush([send(a, cid, "first", "k0")])
    args: tuple[list[Any], ...] = (
        [cid, cid],
        [b, a],
        ["k1", "k0"],
        ["new", "first"],
        ["text"] * 2,
        [],
        [],
        [],
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.fetch(COMMIT_SQL, *args, False)
    assert await top_seq(db, cid) == 1
    assert w.reprobes == 0
    rows = await db.fetch(COMMIT_SQL, *args, True)
    assert [(r["status"], r["seq"]) for r in rows] == [(0, 2), (1, 1)]
    assert await top_seq(db, cid) == 2


async def test_the_resend_key_names_the_conversation(
    db: asyncpg.Pool[asyncpg.Record],
    w: BatchWriter,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    """``(conversation_id, sender_id, cmid)`` is the key (migration 0007): the same ``cmid`` again
    to the same conversation is a resend with the original place, in a later batch and in the
    same one; to another conversation it is a new message there, in both cases too."""
    a, b = await new_user(), await new_user()
    cid, other = await new_conversation(a, b), await new_conversation(a, b)
    [first] = await w.flush([send(a, cid, "hello", "same")])
    original = placed(first)
    outcomes = await w.flush(
        [
            send(a, cid, "hello", "same"),  # a resend: the original place
            send(a, other, "hello", "same"),  # another conversation: a new message
            send(a, other, "hello", "same"),  # its copy in this batch: its place
            send(a, cid, "hello", "again"),
            send(a, other, "hello", "again"),  # both new, each in its conversation
        ]
    )
    assert placed(outcomes[0]) == (original[0], 1, True)
    elsewhere = placed(outcomes[1])
    assert elsewhere[1:] == (1, False) and elsewhere[0] != original[0]
    assert placed(outcomes[2]) == (elsewhere[0], 1, True)
    assert placed(outcomes[3])[1:] == (2, False)
    assert placed(outcomes[4])[1:] == (2, False)
    rows = await db.fetch(
        "SELECT conversation_id, seq, cmid FROM messages WHERE sender_id = $1"
        " ORDER BY conversation_id, seq",
        a,
    )
    assert [tuple(r) for r in rows] == [
        (cid, 1, "same"),
        (cid, 2, "again"),
        (other, 1, "same"),
        (other, 2, "again"),
    ]
    # A later resend to the second conversation answers with that conversation's row.
    [again] = await w.flush([send(a, other, "hello", "same")])
    assert placed(again) == (elsewhere[0], 1, True)
    assert w.committed == 4  # one row per (conversation, cmid)


async def test_a_key_stored_by_a_writer_skipping_the_lock_is_retried_and_answered(
    db: asyncpg.Pool[asyncpg.Record],
    w: BatchWriter,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    """Another transaction stores one of the batch's keys without the conversation's row lock
    while the batch runs (every node's batch takes that lock, so only a foreign writer can).

    The batch's INSERT waits on that transaction's index entries, fails with ``unique_violation``
    once it commits, and the retried call answers the key as a resend with the racer's place
    while the rest of the batch is stored after it, gapless.
    """
    a, b = await new_user(), await new_user()
    cid = await new_conversation(a, b)
    async with db.acquire() as racer:
        tx = racer.transaction()
        await tx.start()
        await racer.execute(
            "INSERT INTO messages (conversation_id, seq, sender_id, cmid, body) "
            "VALUES ($1, 1, $2, 'raced', 'here')",
            cid,
            a,
        )
        flushing = asyncio.create_task(
            w.flush([send(a, cid, "before"), send(a, cid, "here", "raced"), send(a, cid, "after")])
        )
        await asyncio.sleep(10 * TICK)
        assert not flushing.done(), "the batch should wait on the racer's index entry"
        await tx.commit()
    outcomes = await asyncio.wait_for(flushing, 5)
    assert placed(outcomes[0])[1:] == (2, False)
    assert placed(outcomes[1])[1:] == (1, True)
    assert placed(outcomes[2])[1:] == (3, False)
    stored = await db.fetch(
        "SELECT seq FROM messages WHERE conversation_id = $1 AND sender_id = $2 AND cmid = 'raced'",
        cid,
        a,
    )
    assert [r[0] for r in stored] == [1]
    assert await top_seq(db, cid) == 3


async def test_no_cached_plan_of_a_node_scans_a_table_sequentially(
    settings: Settings,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    """A node's session keeps one generic plan per statement for its whole life. Planned while a
    table is small, a lookup becomes a sequential scan, which then reads every dead row version
    the batches leave behind: the foreign-key checks of each message (dropped since, 0005) slowed
    a node run after run (docs/BENCHMARKS.md). The node's sessions turn sequential scans off;
    auto_explain prints the plan of every statement a node runs (the batch function's, sends and
    receipts, the reads of ``realtime/store.py``) after statistics that call the tables small."""
    a, b = await new_user(), await new_user()
    cid = await new_conversation(a, b)
    pool = await create_pool(settings.asyncpg_dsn, max_size=1, timeout_s=5.0)
    plans: list[str] = []
    try:
        async with pool.acquire() as con:
            # Statistics that say the tables are small: what made the planner read them whole.
            await con.execute("ANALYZE users, conversations, conversation_members, messages")
            for statement in (COMMIT_SQL, *STORE_STATEMENTS):
                await con.prepare(statement)  # asyncpg's own catalog queries run here
            await con.execute(
                "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0; "
                "SET auto_explain.log_nested_statements = on; SET client_min_messages = log"
            )
            con.add_log_listener(lambda _con, message: plans.append(message.message))
            for i in range(2):  # without the resend probe, then with it
                await con.fetch(
                    COMMIT_SQL,
                    [cid, cid],
                    [a, b],
                    [f"p{i}a{secrets.token_hex(4)}", f"p{i}b{secrets.token_hex(4)}"],
                    ["x", "y"],
                    ["text", "text"],
                    [cid],
                    [b],
                    [1],
                    bool(i),
                )
            await con.fetch(ACCOUNT_SQL, [a])
            await con.fetch(SYNC_SQL, [cid], [0], 10, a)
    finally:
        await pool.close()
    text = "\n".join(plans)
    assert "Insert on messages" in text and "Update on conversation_members" in text, text
    assert "x.cmid = k.cmid" in text, text  # the probe's plan was printed too
    # Sync's page, in the partitions' primary keys (tests/realtime/test_partition_plans.py
    # checks that each execution reads one partition).
    assert re.search(r"Index Scan using messages_p\d_pkey on messages_p\d", text), text
    assert "Seq Scan" not in text, text


async def _paced_batches(
    db: asyncpg.Pool[asyncpg.Record], a: int, cid: int, *, wait_s: float, sends: int = 40
) -> tuple[int, list[Outcome]]:
    """``sends`` sends one tick apart through a running writer: (batches, outcomes)."""
    done: list[Outcome] = []
    writer = BatchWriter(
        db, batch_max=100, timeout_s=5.0, on_done=done.extend, flushers=1, wait_s=wait_s, fill=32
    )
    writer.start()
    try:
        for i in range(sends):
            request, reply = send(a, cid, f"paced {i}")
            writer.submit(request, reply)
            await asyncio.sleep(TICK / 10)
        async with asyncio.timeout(50 * TICK):
            while len(done) < sends:
                await asyncio.sleep(TICK / 10)
    finally:
        await writer.stop(drain_timeout_s=5)
    return writer.batches, done


async def test_a_bounded_wait_lets_close_sends_share_a_batch_and_loses_none(
    db: asyncpg.Pool[asyncpg.Record],
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    """Sends arriving close together wait (at most ``wait_s``) to fill a batch: fewer calls of
    the function for the same sends, every one stored once, in order."""
    a, b = await new_user(), await new_user()
    eager_cid, patient_cid = await new_conversation(a, b), await new_conversation(a, b)
    eager, eager_done = await _paced_batches(db, a, eager_cid, wait_s=0)
    patient, patient_done = await _paced_batches(db, a, patient_cid, wait_s=20 * TICK)
    assert patient * 2 < eager, (patient, eager)
    for cid, outcomes in ((eager_cid, eager_done), (patient_cid, patient_done)):
        assert sorted(placed(o)[1] for o in outcomes) == list(range(1, 41))
        assert await top_seq(db, cid) == 40


async def test_a_commit_stalled_on_a_lock_lets_other_conversations_commit_beside_it_never_its_own(
    db: asyncpg.Pool[asyncpg.Record],
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    """The first commit waits on a conversation's row lock (as behind a stalled fsync). Once it
    is slow, the next batch commits beside it and is reported at once, but it holds only the
    other conversation: the stalled conversation's next send waits for the first batch's
    outcome, so that conversation is still acked in ``seq`` order."""
    a, b = await new_user(), await new_user()
    held_cid, free_cid = await new_conversation(a, b), await new_conversation(a, b)
    done: list[Outcome] = []
    writer = BatchWriter(db, batch_max=100, timeout_s=5.0, on_done=done.extend, flushers=2)
    writer.start()
    try:
        async with db.acquire() as racer:
            tx = racer.transaction()
            await tx.start()
            await racer.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", held_cid)
            writer.submit(*send(a, held_cid, "first"))
            await asyncio.sleep(2 * TICK)
            writer.submit(*send(b, held_cid, "second"))
            writer.submit(*send(b, free_cid, "beside"))
            async with asyncio.timeout(40 * TICK):
                while not done:
                    await asyncio.sleep(TICK / 5)
            await asyncio.sleep(2 * TICK)
            assert [o.request.cid for o in done] == [free_cid]
            assert writer.pending == 1, "the held conversation's second send waits, queued"
            await tx.commit()
        async with asyncio.timeout(40 * TICK):
            while len(done) < 3:
                await asyncio.sleep(TICK / 5)
    finally:
        await writer.stop(drain_timeout_s=5)
    bodies = [(o.request.cid, _body(o), placed(o)[1]) for o in done]
    assert bodies == [(free_cid, "beside", 1), (held_cid, "first", 1), (held_cid, "second", 2)]
    assert writer.batches == 3


async def test_at_peak_two_commits_overlap_without_sharing_a_conversation(
    db: asyncpg.Pool[asyncpg.Record],
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
) -> None:
    """Many conversations sending at once: every outcome of one conversation is reported in
    ``seq`` order (the batches in flight never share one), each send stored once, none lost."""
    users = [await new_user() for _ in range(8)]
    cids = [await new_conversation(users[i], users[(i + 1) % 8]) for i in range(8)]
    done: list[Outcome] = []
    writer = _Watched(db, batch_max=16, timeout_s=5.0, on_done=done.extend, flushers=2, fill=4)
    writer.start()
    rounds = 30
    try:
        for r in range(rounds):
            for i, cid in enumerate(cids):
                writer.submit(*send(users[i], cid, f"{r}"))
            await asyncio.sleep(0)
        async with asyncio.timeout(100 * TICK):
            while len(done) < rounds * len(cids):
                await asyncio.sleep(TICK / 5)
    finally:
        await writer.stop(drain_timeout_s=5)
    for cid in cids:
        mine = [o for o in done if o.request.cid == cid]
        assert [placed(o)[1] for o in mine] == list(range(1, rounds + 1))
        assert [_body(o) for o in mine] == [str(r) for r in range(rounds)]
        assert await top_seq(db, cid) == rounds
    assert writer.batches < rounds * len(cids) / 2
    assert writer.overlapped, "two commits were never in flight together"
    assert not writer.shared, writer.shared


def _body(outcome: Outcome) -> str:
    assert isinstance(outcome.request, SendRequest)
    return outcome.request.body


class _Watched(BatchWriter):
    """The real writer, recording which conversations its commits in flight hold together."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_flight: list[set[int]] = []
        self.overlapped = 0
        self.shared: list[set[int]] = []

    async def flush(self, batch: list[Item]) -> list[Outcome]:
        cids = {request.cid for request, _ in batch}
        for other in self.in_flight:
            self.overlapped += 1
            if cids & other:
                self.shared.append(cids & other)
        self.in_flight.append(cids)
        try:
            return await super().flush(batch)
        finally:
            self.in_flight.remove(cids)

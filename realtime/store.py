"""PostgreSQL reads of a realtime node (asyncpg, hand-written SQL): users, memberships, sync.

Owns the asyncpg pool's read queries and the translation of asyncpg's failures: anything that
means "the database cannot be reached" becomes :class:`StoreUnavailable`, so no caller above
this module (or :mod:`realtime.batch`) catches an asyncpg exception type. It must not import the
ORM (``common.models``): a test prepares every statement here against the migrated schema and
checks :data:`COLUMNS` against the models.

Exceptions::

    StoreUnavailable   PostgreSQL unreachable, shutting down, out of connections or timed out
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import asyncpg

from realtime.coalesce import Coalescer, CoalescerClosed
from realtime.domain import Memberships, StoredMessage, UserState

#: asyncpg/OS failures that mean "try again later" rather than "this request is wrong".
UNAVAILABLE_ERRORS: Final = (
    OSError,
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)

#: Every table and column the realtime SQL touches (checked against common.models by a test).
COLUMNS: Final = {
    "users": {"id", "token_version", "is_active", "banned_until", "deleted_at", "trust_score"},
    "conversations": {"id", "closed_at"},
    "conversation_members": {"conversation_id", "user_id", "last_read_seq"},
    "messages": {
        "conversation_id",
        "seq",
        "id",
        "sender_id",
        "cmid",
        "body",
        "kind",
        "created_at",
        "deleted_at",
    },
    "blocks": {"blocker_id", "blocked_id"},
}

#: Everything authentication needs, for many users in one round trip (one row per distinct id
#: of ``$1``, its id first): the ``users`` columns that decide whether a token may be used (a
#: missing user gives NULLs), the open conversations with their other members as parallel arrays
#: (a conversation with no other member has a NULL there), and the block peers, symmetric as in
#: api/services/relations.py (either direction hides the two from each other). The sockets that
#: authenticate at the same moment share one statement (:class:`Store` coalesces them); membership
#: refreshes read the same statement.
ACCOUNT_SQL: Final = """
SELECT q.id,
       u.token_version,
       (NOT u.is_active OR u.deleted_at IS NOT NULL OR coalesce(u.banned_until > now(), false)),
       u.trust_score,
       m.cids,
       m.others,
       ARRAY(SELECT b.blocked_id FROM blocks b WHERE b.blocker_id = q.id
             UNION
             SELECT b.blocker_id FROM blocks b WHERE b.blocked_id = q.id)
FROM (SELECT DISTINCT unnest($1::bigint[]) AS id) q
LEFT JOIN users u ON u.id = q.id
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(me.conversation_id), '{}') AS cids,
           coalesce(array_agg(other.user_id), '{}') AS others
    FROM conversation_members me
    JOIN conversations c ON c.id = me.conversation_id AND c.closed_at IS NULL
    LEFT JOIN conversation_members other
           ON other.conversation_id = me.conversation_id AND other.user_id <> me.user_id
    WHERE me.user_id = q.id
) m
"""

# One page across conversations, in (conversation, seq) order; the membership and open state are
# checked again here so a stale cache can never leak history.
SYNC_SQL: Final = """
SELECT m.conversation_id, m.seq, m.id, m.sender_id, m.cmid, m.body, m.kind,
       (extract(epoch FROM m.created_at) * 1000)::bigint, m.deleted_at IS NOT NULL
FROM unnest($1::bigint[], $2::bigint[]) AS p(cid, after)
JOIN conversation_members cm ON cm.conversation_id = p.cid AND cm.user_id = $4
JOIN conversations c ON c.id = p.cid AND c.closed_at IS NULL
CROSS JOIN LATERAL (
    SELECT * FROM messages x
    WHERE x.conversation_id = p.cid AND x.seq > p.after
    ORDER BY x.seq LIMIT $3
) m
ORDER BY m.conversation_id, m.seq
LIMIT $3
"""

STATEMENTS: Final = (ACCOUNT_SQL, SYNC_SQL)


class StoreUnavailable(Exception):
    """PostgreSQL could not answer; nothing was read or written."""


async def create_pool(dsn: str, *, max_size: int, timeout_s: float) -> asyncpg.Pool[asyncpg.Record]:
    """A lazy pool (``min_size=0``): the node starts and keeps its sockets with PostgreSQL down.

    Every statement of a node has a fixed shape, so its sessions always use the cached generic
    plan: with the default ``plan_cache_mode`` PostgreSQL re-planned ``mm_commit_batch``'s
    statements on every call for one-message batches (750 us of backend CPU a call, 325 us with
    the generic plan, which probes the same indexes).

    Every statement is also a lookup by key, so the sessions never scan a table from end to end
    (``enable_seqscan=off``): each message's foreign-key checks (PostgreSQL's own queries, which
    take no hint) were planned as sequential scans of ``conversations`` while it was small, and
    every committed batch left dead row versions there (0004 updated ``last_seq``), so those
    scans grew with every batch. One node slowed run after run (send->ack p50 7 -> 25 ms over
    five 8 s runs at 12,000/s; its flusher backends spent 5 % of their CPU in sequential scans in
    the first run and 21 % in the fifth); with index probes it stays flat (docs/BENCHMARKS.md).
    """
    return await asyncpg.create_pool(
        dsn,
        min_size=0,
        max_size=max_size,
        timeout=timeout_s,
        command_timeout=timeout_s,
        server_settings={"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"},
    )


#: Users per account statement: a storm's sockets go in a few statements of this size.
ACCOUNT_BATCH: Final = 256


@dataclass(frozen=True, slots=True)
class Account:
    """One user's row as :data:`ACCOUNT_SQL` read it (shared by every socket that asked)."""

    state: UserState | None
    peers: Mapping[int, tuple[int, ...]]
    blocked: frozenset[int]
    loaded_at: float


class Store:
    """Reads for authentication, membership caches and sync.

    Account reads are coalesced: the users asked for in one loop iteration are read by one
    statement, with at most ``account_calls`` of them running, so authentication holds at most
    that many pooled connections however many sockets arrive at once (the rest wait in line,
    bounded by the protocol's auth timeout, rather than time out on the pool).
    """

    def __init__(
        self, pool: asyncpg.Pool[asyncpg.Record], *, timeout_s: float, account_calls: int = 4
    ) -> None:
        self.pool, self.timeout_s = pool, timeout_s
        self.accounts: Coalescer[int, Account] = Coalescer(
            self.read_accounts, max_batch=ACCOUNT_BATCH, max_in_flight=account_calls
        )

    async def read_accounts(self, users: list[int]) -> dict[int, Account]:
        """Every one of ``users`` in one statement (a missing user has ``state`` None)."""
        try:
            async with self.pool.acquire(timeout=self.timeout_s) as con:
                rows = await con.fetch(ACCOUNT_SQL, users)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        loaded_at = time.time()
        return {int(row[0]): _account(row, loaded_at) for row in rows}

    async def account(self, user_id: int) -> tuple[UserState | None, Memberships]:
        """The user's token state (``None`` when the user does not exist) and memberships,
        read by a statement that started after this call; the memberships are this caller's
        own copy (a socket's protocol edits its cache)."""
        try:
            account = await self.accounts.get(user_id)
        except CoalescerClosed as exc:
            raise StoreUnavailable("closed") from exc
        memberships = Memberships(
            peers=dict(account.peers), blocked=account.blocked, loaded_at=account.loaded_at
        )
        return account.state, memberships

    async def user_state(self, user_id: int) -> UserState | None:
        """``None`` when the user does not exist."""
        return (await self.account(user_id))[0]

    async def memberships(self, user_id: int) -> Memberships:
        return (await self.account(user_id))[1]

    async def close(self) -> None:
        """Fail the account reads still waiting and cancel those in flight (before the pool)."""
        await self.accounts.close()

    async def sync_page(
        self, user_id: int, positions: dict[int, int], limit: int
    ) -> tuple[list[StoredMessage], bool]:
        """Up to ``limit`` messages after ``positions``; True when nothing more is waiting."""
        if not positions:
            return [], True
        cids: Sequence[int] = list(positions)
        after = [positions[cid] for cid in cids]
        try:
            async with self.pool.acquire(timeout=self.timeout_s) as con:
                rows = await con.fetch(SYNC_SQL, cids, after, limit + 1, user_id)
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(type(exc).__name__) from exc
        messages = [
            StoredMessage(
                cid=r[0],
                seq=r[1],
                id=r[2],
                sender=r[3],
                cmid=r[4],
                body=r[5],
                kind=r[6],
                time_ms=r[7],
                deleted=r[8],
            )
            for r in rows[:limit]
        ]
        return messages, len(rows) <= limit


def _account(row: asyncpg.Record, loaded_at: float) -> Account:
    _id, version, disabled, trust, cids, others, blocked = row
    state = None if version is None else UserState(int(version), bool(disabled), int(trust))
    peers: dict[int, list[int]] = {}
    for cid, other in zip(cids, others, strict=True):
        members = peers.setdefault(int(cid), [])
        if other is not None:
            members.append(int(other))
    return Account(
        state=state,
        peers={cid: tuple(members) for cid, members in peers.items()},
        blocked=frozenset(int(u) for u in blocked),
        loaded_at=loaded_at,
    )

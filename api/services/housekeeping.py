"""Housekeeping: delete refresh and account tokens a day after they expire.

Every login, refresh, verification mail and reset adds a row to ``refresh_tokens`` or
``account_tokens``; nothing else ever deletes them, so without this they grow forever. A row is
useless once expired (the routes refuse it), and the grace of :data:`PURGE_AFTER` keeps it a
day longer, so a refused refresh or reset can still be traced to its row.

Each API process runs :func:`run_housekeeping` in the background (``MM_HOUSEKEEPING_INTERVAL_S``,
0 turns it off). Deletes go in batches of :data:`BATCH` rows with ``SKIP LOCKED``, so several
API processes purging at once neither block each other nor hold long locks.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger("api.housekeeping")

PURGE_AFTER: Final = dt.timedelta(days=1)
BATCH: Final = 1000
#: A bound on batches per table and pass (a million rows); the next pass continues.
MAX_BATCHES: Final = 1000

#: Table names are constants of this module, never input.
_PURGE_SQL: Final = {
    table: text(
        f"DELETE FROM {table} WHERE id IN ("  # noqa: S608 - fixed table names above
        f"SELECT id FROM {table} WHERE expires_at < :cutoff "
        "ORDER BY id LIMIT :batch FOR UPDATE SKIP LOCKED)"
    )
    for table in ("refresh_tokens", "account_tokens")
}


@dataclass(frozen=True, slots=True)
class Purged:
    refresh_tokens: int
    account_tokens: int


async def purge_expired_tokens(
    sessions: async_sessionmaker[AsyncSession], now: dt.datetime, *, batch: int = BATCH
) -> Purged:
    """Delete token rows that expired more than :data:`PURGE_AFTER` before ``now``."""
    cutoff = now - PURGE_AFTER
    counts: dict[str, int] = {}
    for table, statement in _PURGE_SQL.items():
        counts[table] = 0
        for _ in range(MAX_BATCHES):
            async with sessions() as session, session.begin():
                result = await session.execute(statement, {"cutoff": cutoff, "batch": batch})
            deleted = int(getattr(result, "rowcount", 0) or 0)
            counts[table] += deleted
            if deleted < batch:
                break
    return Purged(counts["refresh_tokens"], counts["account_tokens"])


async def run_housekeeping(sessions: async_sessionmaker[AsyncSession], interval_s: float) -> None:
    """Purge every ``interval_s`` until cancelled; a failed pass is logged and retried later."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            purged = await purge_expired_tokens(sessions, dt.datetime.now(dt.UTC))
        except Exception as exc:
            log.warning("housekeeping pass failed", extra={"error": type(exc).__name__})
            continue
        if purged.refresh_tokens or purged.account_tokens:
            log.info(
                "expired tokens purged",
                extra={
                    "refresh_tokens": purged.refresh_tokens,
                    "account_tokens": purged.account_tokens,
                },
            )

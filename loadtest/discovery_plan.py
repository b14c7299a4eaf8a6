"""The discovery statement's plans, both as ``EXPLAIN (ANALYZE, BUFFERS)`` shows them and as run.

Owns reading the plan of the very statement ``GET /api/discovery`` issues, built by the service
(``candidates_query``; no SQL is copied here), in the two forms PostgreSQL runs it. The API's
driver (asyncpg) prepares each statement once per connection, and PostgreSQL plans a prepared
statement for its bound values (a *custom* plan) for its first :data:`CUSTOM_PLAN_RUNS`
executions, then switches to one *generic* plan, made without the values, when that plan's
estimated cost is no worse than the custom plans' average. So:

- :func:`custom_plan`: ``EXPLAIN (ANALYZE, BUFFERS)`` through
  :func:`api.services.discovery.explain`, which plans with the bound values: the first five
  requests of each statement on each connection;
- :func:`generic_plan`: the service's own :func:`~api.services.discovery.discover` on one
  session with ``plan_cache_mode = force_generic_plan`` and ``auto_explain`` (``log_analyze``,
  ``log_buffers``) sending the executed plan back to this client: every later request.

:func:`summarize` reads either text plan: whether the radius test reads ``ix_profiles_location``
(GiST), the access path to ``profiles``, its rows, the time and the buffers. It changes no
setting outside its own transaction, which it rolls back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from api.schemas.discovery import DISCOVERY_PAGE_DEFAULT
from api.services.discovery import discover, explain
from common.settings import Settings
from loadtest.explain import auto_explained

GIST_INDEX: Final = "ix_profiles_location"
#: PostgreSQL's rule for a prepared statement: custom plans for this many executions first.
CUSTOM_PLAN_RUNS: Final = 5
#: The session setting that makes ``discover`` run its generic plan (``auto_explain`` sends it
#: back to us, :func:`loadtest.explain.auto_explained`).
GENERIC_PLAN_SETTING: Final = "SET LOCAL plan_cache_mode = force_generic_plan"
#: A plan line's node text, before ``(cost=...``; and the figures read from the plan.
_NODE = re.compile(r"^\s*(?:->\s*)?(.*?)\s*\(cost=")
_ESTIMATED_ROWS = re.compile(r"\(cost=[\d.]+\.\.[\d.]+ rows=(\d+)")
_ACTUAL_ROWS = re.compile(r"actual time=[\d.]+\.\.[\d.]+ rows=(\d+)")
_LOOPS = re.compile(r" loops=(\d+)\)")
_EXECUTION = re.compile(r"(?:Execution Time|duration): ([\d.]+) ms")
_PLANNING = re.compile(r"Planning Time: ([\d.]+) ms")
_BUFFERS = re.compile(r"Buffers: (.*)")


@dataclass(frozen=True, slots=True)
class Plan:
    """What one executed plan of one searcher's first page showed."""

    searcher: str
    radius_km: int
    kind: Literal["custom", "generic"]
    gist_used: bool
    #: The plan nodes that read ``profiles`` (index or sequential scans), without costs.
    profiles_access: list[str]
    #: Rows out of the first node that reads ``profiles`` (after the filters applied there).
    scan_rows: int | None
    #: The planner's estimate of those rows: far below ``scan_rows``, it picks loops per row.
    scan_estimate: int | None
    execution_ms: float | None
    #: Sequential scans run more than once (``Seq Scan on users … loops=3516``): a whole table
    #: read per candidate, the shape that made custom plans take seconds.
    repeated_seq_scans: list[str]
    #: Planning time (only ``EXPLAIN`` reports it; a generic plan was planned earlier).
    planning_ms: float | None
    #: The top node's buffer counts (``shared hit=... read=...``).
    buffers: str | None
    lines: list[str]

    def line(self) -> str:
        return (
            f"{self.kind} plan {' | '.join(self.profiles_access)}; rows {self.scan_rows}"
            f" (estimated {self.scan_estimate}),"
            f" execution {self.execution_ms} ms, buffers {self.buffers}"
            + (
                f"; repeated {', '.join(self.repeated_seq_scans)}"
                if self.repeated_seq_scans
                else ""
            )
        )


def summarize(
    searcher: str, radius_km: int, lines: list[str], kind: Literal["custom", "generic"] = "custom"
) -> Plan:
    """Read one text plan (``EXPLAIN (ANALYZE, BUFFERS)`` or ``auto_explain``'s)."""
    profiles = [line for line in lines if " on profiles" in line or GIST_INDEX in line]
    access = [node.group(1) for line in profiles if (node := _NODE.match(line))]
    rows = next((int(m.group(1)) for line in profiles if (m := _ACTUAL_ROWS.search(line))), None)
    estimate = next(
        (int(m.group(1)) for line in profiles if (m := _ESTIMATED_ROWS.search(line))), None
    )

    def first(pattern: re.Pattern[str]) -> str | None:
        return next((m.group(1) for line in lines if (m := pattern.search(line))), None)

    repeated = [
        f"{node.group(1)} x{loops.group(1)}"
        for line in lines
        if (node := _NODE.match(line))
        and node.group(1).startswith("Seq Scan")
        and (loops := _LOOPS.search(line))
        and int(loops.group(1)) > 1
    ]
    execution, planning = first(_EXECUTION), first(_PLANNING)
    return Plan(
        searcher=searcher,
        radius_km=radius_km,
        kind=kind,
        gist_used=any(GIST_INDEX in node for node in access),
        profiles_access=access,
        scan_rows=rows,
        scan_estimate=estimate,
        repeated_seq_scans=repeated,
        execution_ms=float(execution) if execution else None,
        planning_ms=float(planning) if planning else None,
        buffers=first(_BUFFERS),
        lines=lines,
    )


async def custom_plan(session: AsyncSession, settings: Settings, *, viewer_id: int) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the viewer's first page, planned for its values."""
    return await explain(session, settings, viewer_id=viewer_id, options=("ANALYZE", "BUFFERS"))


def plan_of_page(messages: list[str]) -> list[str]:
    """From ``auto_explain``'s messages, the page query's: its duration line, then its plan.

    Each message is ``duration: … ms  plan:``, the query text, then the plan, whose first line
    is the first with a cost; the page query is the one that reads ``profiles`` through the
    ``near`` CTE (the other is the viewer's own row).
    """
    for message in messages:
        lines = message.splitlines()
        if "CTE near" not in message or not lines:
            continue
        start = next((i for i, line in enumerate(lines) if "(cost=" in line), len(lines))
        return [lines[0], *lines[start:]]
    return []


async def generic_plan(session: AsyncSession, settings: Settings, *, viewer_id: int) -> list[str]:
    """The executed generic plan of the viewer's first page, as the API runs it after warm-up."""
    connection = await session.connection()
    raw: Any = await connection.get_raw_connection()
    driver = raw.driver_connection  # the asyncpg connection under SQLAlchemy's adapter
    await session.execute(text(GENERIC_PLAN_SETTING))
    try:
        async with auto_explained(driver, local=True) as messages:
            await discover(
                session, settings, viewer_id=viewer_id, cursor=None, limit=DISCOVERY_PAGE_DEFAULT
            )
    finally:
        await session.rollback()
    return plan_of_page(messages)

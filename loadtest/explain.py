"""Executed plans as PostgreSQL ran them, sent back to the client, and a reader of JSON plans.

Owns two things the plan checks share (the discovery figure, :mod:`loadtest.discovery_plan`, and
the partition tests, ``tests/realtime/test_partition_plans.py``):

- :func:`auto_explained`: on one asyncpg connection, ``auto_explain`` logs the executed plan of
  every statement (``log_analyze``: actual rows and loops; nested: the statements inside a
  plpgsql function too) to this client, whatever plan PostgreSQL picked (custom or generic);
- :func:`partition_reads`: in a JSON plan, each node that reads a partitioned table (an
  ``Append`` / ``Merge Append`` over its partitions, or one partition's scan once the planner
  pruned the rest) with the partition scans it ran and how often.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, Final

import asyncpg

#: ``auto_explain`` settings: every statement, executed, with buffers, logged to the client.
AUTO_EXPLAIN_SETTINGS: Final = {
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "client_min_messages": "log",
}
#: Plan node types that read a table through one of its indexes (a bitmap heap scan only over
#: a bitmap index scan: a short key range, read in heap order).
INDEX_SCANS: Final = frozenset({"Index Scan", "Index Only Scan"})
_BITMAP_HEAP, _BITMAP_INDEX = "Bitmap Heap Scan", "Bitmap Index Scan"
_APPENDS: Final = frozenset({"Append", "Merge Append"})
_PLAN_START: Final = "plan:\n"


@contextlib.asynccontextmanager
async def auto_explained(
    connection: Any, *, local: bool = False, nested: bool = False, json_format: bool = False
) -> AsyncIterator[list[str]]:
    """Collect ``auto_explain``'s message of every statement run on ``connection`` meanwhile.

    ``connection`` is an asyncpg connection (a pool's proxy or SQLAlchemy's driver connection);
    ``local`` sets everything for the current transaction only (``SET LOCAL``). ``LOAD`` needs a
    superuser, which the project's dev and test databases give.
    """
    await connection.execute("LOAD 'auto_explain'")
    settings = {
        **AUTO_EXPLAIN_SETTINGS,
        "auto_explain.log_nested_statements": "on" if nested else "off",
        "auto_explain.log_format": "json" if json_format else "text",
    }
    for name, value in settings.items():
        await connection.execute("SELECT set_config($1, $2, $3)", name, value, local)
    messages: list[str] = []

    def listener(_connection: object, message: asyncpg.PostgresLogMessage) -> None:
        messages.append(str(message.message))

    connection.add_log_listener(listener)
    try:
        yield messages
        # auto_explain logs when the executor ends, which for asyncpg's unnamed portal is when
        # the next statement binds; asyncpg then hands the message over with call_soon.
        await connection.execute("SELECT 1")
        await asyncio.sleep(0)
    finally:
        connection.remove_log_listener(listener)


def json_plans(messages: list[str]) -> list[dict[str, Any]]:
    """The JSON documents (``Query Text``, ``Plan``) of ``auto_explain`` messages."""
    return [json.loads(m.split(_PLAN_START, 1)[1]) for m in messages if _PLAN_START in m]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """``plan`` and every node under it, depth first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


@dataclass(frozen=True, slots=True)
class Scan:
    """One scan node of a partition: its type, index and index condition (a bitmap heap scan's
    are its bitmap index scan's), how often it ran (0: never), and how often run-time pruning
    picked its partition (``selected``: its gating ``Result``'s runs, else its own)."""

    node_type: str
    relation: str
    index: str | None
    index_cond: str | None
    loops: int
    selected: int

    @property
    def by_index(self) -> bool:
        return self.index_cond is not None and (
            self.node_type in INDEX_SCANS or self.node_type == _BITMAP_HEAP
        )


@dataclass(frozen=True, slots=True)
class PartitionRead:
    """A node reading a partitioned table, run ``loops`` times, and its partition scans."""

    loops: int
    scans: list[Scan]

    @property
    def executed(self) -> list[Scan]:
        return [scan for scan in self.scans if scan.loops > 0]

    @property
    def scans_run(self) -> int:
        """Partition scans run, over all the read's executions."""
        return sum(scan.loops for scan in self.scans)

    @property
    def one_partition_per_loop(self) -> bool:
        """Each of the read's executions picked exactly one partition (pruned, keyed); a gate
        above its scan (a ``Result``'s one-time filter) may still have skipped the scan."""
        return sum(scan.selected for scan in self.scans) == self.loops

    @property
    def by_index(self) -> bool:
        """Every partition scan is an index lookup with a condition (none reads it whole)."""
        return all(scan.by_index for scan in self.scans)

    def keyed_on(self, column: str) -> bool:
        """Every partition scan's index condition names ``column``."""
        return all(column in (scan.index_cond or "") for scan in self.scans)


def _scan(node: dict[str, Any], gate: dict[str, Any] | None = None) -> Scan:
    """``node``'s :class:`Scan`; ``gate``: the ``Result`` that gates it, if any."""
    lookup = node
    if node["Node Type"] == _BITMAP_HEAP:
        children = node.get("Plans", [])
        lookup = children[0] if len(children) == 1 else {}
        if lookup.get("Node Type") != _BITMAP_INDEX:
            lookup = {}
    return Scan(
        node_type=str(node["Node Type"]),
        relation=str(node.get("Relation Name")),
        index=lookup.get("Index Name"),
        index_cond=lookup.get("Index Cond"),
        loops=int(node.get("Actual Loops", 0)),
        selected=int((gate or node).get("Actual Loops", 0)),
    )


def _gated(node: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(scan, gate)`` for a ``Result`` that only gates one scan, else ``(node, None)``."""
    children = node.get("Plans", [])
    if node["Node Type"] == "Result" and len(children) == 1 and "Relation Name" in children[0]:
        return children[0], node
    return node, None


def partition_reads(plan: dict[str, Any], partitions: frozenset[str]) -> list[PartitionRead]:
    """Every read of the table whose partitions are ``partitions``, in ``plan`` (a ``Plan``).

    An ``Append`` whose children scan those partitions is one read (a child may be a gating
    ``Result`` over the partition's scan, for a condition on the outer row alone); a partition
    scanned outside such an ``Append`` (the planner pruned the others) is a read of its own.
    """
    reads: list[PartitionRead] = []

    def walk(node: dict[str, Any]) -> None:
        children = [_gated(child) for child in node.get("Plans", [])]
        if node["Node Type"] in _APPENDS and any(
            child.get("Relation Name") in partitions for child, _ in children
        ):
            scans = [_scan(child, gate) for child, gate in children]
            reads.append(PartitionRead(int(node.get("Actual Loops", 0)), scans))
            return
        if node.get("Relation Name") in partitions:
            scan = _scan(node)
            reads.append(PartitionRead(scan.loops, [scan]))
        for child, _ in children:
            walk(child)

    walk(plan)
    return reads

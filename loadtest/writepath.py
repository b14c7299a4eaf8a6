"""``python -m loadtest.writepath``: PostgreSQL's own cost of one committed message, by batch size.

Owns a benchmark of the write function alone, without a node: two fresh databases on the
project's dev PostgreSQL, one migrated to a baseline revision (``--baseline``, default the
previous write function) and one to ``head``, each with the same population (``--pairs``
conversations of two members). For each batch size it calls ``mm_commit_batch`` the way a
node's flusher does (one call, outside any explicit transaction, on one connection with the
node's session settings), alternating baseline and head call by call so that a noisy machine
hurts both alike, and reads from the server:

- the backend's CPU time in nanoseconds (``/proc/<pg_backend_pid>/schedstat``: this tool runs on
  the same machine), read just before and after each call,
- WAL bytes, from the cluster's insert position (``pg_current_wal_insert_lsn()``: cluster-wide, so
  the dev cluster must be otherwise idle),

and reports each per committed message, with head's ratio to the baseline. Every loop is bounded
by ``--calls``. The dev services must be running (``make services``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import asyncpg

from loadtest import stack
from loadtest.population import Pair, create_pairs

DEFAULT_DB_URL: Final = "postgresql+asyncpg://mergemeet@127.0.0.1:55432/mergemeet"
#: The node's session settings (realtime/store.py ``create_pool``).
NODE_SETTINGS: Final = {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"}
CALL: Final = (
    "SELECT * FROM mm_commit_batch($1::bigint[], $2::bigint[], $3::text[], $4::text[],"
    " $5::text[], $6::bigint[], $7::bigint[], $8::bigint[])"
)
BODY: Final = "x" * 100
#: The cluster's WAL insert position, and the bytes written since one.
LSN: Final = "SELECT pg_current_wal_insert_lsn()::text"
LSN_SINCE: Final = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::text::pg_lsn)"


def backend_cpu_s(pid: int) -> float:
    """CPU time the process has run, from the scheduler (ns resolution, unlike ``stat``'s ticks)."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


@dataclass
class Side:
    """One database and the connection that writes to it."""

    name: str
    con: asyncpg.Connection
    pairs: list[Pair]
    backend: int
    cpu_s: float = 0.0
    wal_bytes: int = 0
    messages: int = 0
    calls: int = 0

    async def call(self, size: int, rng: random.Random, tag: str) -> None:
        """One batch of ``size`` sends, each to a random pair by a random member of it."""
        # Grouped by conversation, as the node's batch writer sends them.
        chosen = sorted((rng.choice(self.pairs) for _ in range(size)), key=lambda p: p.cid)
        senders = [p.a if rng.random() < 0.5 else p.b for p in chosen]
        cmids = [f"{tag}-{self.calls}-{i}" for i in range(size)]
        wal0 = await self.con.fetchval(LSN)
        cpu0 = backend_cpu_s(self.backend)
        await self.con.fetch(
            CALL,
            [p.cid for p in chosen],
            senders,
            cmids,
            [BODY] * size,
            ["text"] * size,
            [],
            [],
            [],
        )
        self.cpu_s += backend_cpu_s(self.backend) - cpu0
        self.wal_bytes += int(await self.con.fetchval(LSN_SINCE, wal0))
        self.messages += size
        self.calls += 1

    def per_message(self) -> dict[str, float]:
        n = max(self.messages, 1)
        return {
            "cpu_us": round(self.cpu_s / n * 1e6, 1),
            "wal_bytes": round(self.wal_bytes / n, 1),
        }


async def open_side(name: str, base_url: str, revision: str, pairs: int) -> Side:
    url = await stack.recreate_database(base_url, name)
    stack.migrate(url, revision)
    dsn = url.replace("+asyncpg", "")
    population = await create_pairs(dsn, pairs)
    con = await asyncpg.connect(dsn, server_settings=NODE_SETTINGS)
    await con.execute("ANALYZE")
    backend = int(await con.fetchval("SELECT pg_backend_pid()"))
    return Side(name, con, population, backend)


async def run(args: argparse.Namespace) -> None:
    base_url = os.environ.get("MM_DATABASE_URL", DEFAULT_DB_URL)
    base = await open_side("mergemeet_wp_base", base_url, args.baseline, args.pairs)
    head = await open_side("mergemeet_wp_head", base_url, "head", args.pairs)
    rng = random.Random(args.seed)
    tag = secrets.token_hex(3)
    print(f"baseline {args.baseline} vs head, {args.pairs} pairs, {args.calls} calls per size")
    print("size  side        CPU us/msg  WAL B/msg")
    try:
        for size in args.sizes:
            rows: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
            for _round in range(args.rounds):
                for side in (base, head):
                    side.cpu_s, side.wal_bytes, side.messages = 0.0, 0, 0
                for _ in range(args.calls):
                    # Alternate which goes first so neither always follows the other's fsync.
                    first, second = (base, head) if rng.random() < 0.5 else (head, base)
                    await first.call(size, rng, tag)
                    await second.call(size, rng, tag)
                rows["base"].append(base.per_message())
                rows["head"].append(head.per_message())
            for key in ("base", "head"):
                cpu = statistics.median(r["cpu_us"] for r in rows[key])
                wal = statistics.median(r["wal_bytes"] for r in rows[key])
                print(f"{size:>4}  {key:<10}{cpu:>12.1f}{wal:>11.1f}")
            ratio = statistics.median(r["cpu_us"] for r in rows["head"]) / max(
                statistics.median(r["cpu_us"] for r in rows["base"]), 1e-9
            )
            print(f"      head/base CPU ratio {ratio:.2f}")
    finally:
        await base.con.close()
        await head.con.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m loadtest.writepath", description=__doc__)
    p.add_argument("--baseline", default="0004_commit_batch_key_probes")
    p.add_argument("--pairs", type=int, default=100)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 50, 500])
    p.add_argument("--calls", type=int, default=200, help="calls per size, round and side")
    p.add_argument("--rounds", type=int, default=3, help="median of this many rounds")
    p.add_argument("--seed", type=int, default=1)
    asyncio.run(run(p.parse_args(argv)))


if __name__ == "__main__":
    main()

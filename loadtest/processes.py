"""CPU time of the processes one bench run uses, each apart, from ``/proc``.

The bench's PostgreSQL cluster and Redis are shared: other databases' backends (a test suite
running beside it) and other Redis servers on the machine must not count. So this finds the
cluster's postmaster (``postmaster.pid`` in its data directory) and counts its children that
serve the bench's database plus its background processes (WAL writer, checkpointer, background
writer, autovacuum launcher: work the bench's writes cause), and the one Redis server by the
``process_id`` it reports (on a Redis Cluster, every node of it, masters and replicas: the
replication a write causes is its cost too). CPU is user + system time (``/proc/<pid>/stat``),
never wall time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from redis.asyncio import RedisCluster

from common.redisclient import redis_client

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (``OSError`` once it has exited)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def _children(parent: int) -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            yield int(entry.name)


def serves(title: str, database: str) -> bool:
    """Does the PostgreSQL process titled ``title`` work for ``database`` (or the cluster)?

    Backends are ``postgres: <user> <database> <client> <state>``, autovacuum workers
    ``postgres: autovacuum worker <database>``; any other title is a background process.
    """
    words = title.split()
    if words[1:3] == ["autovacuum", "worker"]:
        return words[-1] == database
    client = len(words) > 3 and ("(" in words[3] or words[3] == "[local]")
    return words[2] == database if client else True


@dataclass(frozen=True)
class Services:
    """The bench's PostgreSQL cluster (its postmaster) and database, and its Redis servers (one,
    or every node of a Redis Cluster)."""

    postmaster: int
    database: str
    redis: tuple[int, ...]
    postgres_version: str
    redis_version: str

    @classmethod
    def find(cls, database_url: str, redis_url: str) -> Services:
        async def ask() -> Services:
            con = await asyncpg.connect(database_url.replace("+asyncpg", ""))
            try:
                data_dir = str(await con.fetchval("SHOW data_directory"))
                database = str(await con.fetchval("SELECT current_database()"))
                version = str(await con.fetchval("SHOW server_version"))
            finally:
                await con.close()
            redis = redis_client(redis_url)
            try:
                if isinstance(redis, RedisCluster):
                    await redis.initialize()
                    infos = [
                        await redis.info("server", target_nodes=node) for node in redis.get_nodes()
                    ]
                else:
                    infos = [await redis.info("server")]
            finally:
                await redis.aclose()
            postmaster = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
            pids = tuple(int(info["process_id"]) for info in infos)
            redis_version = str(infos[0]["redis_version"])
            return cls(postmaster, database, pids, version, redis_version)

        return asyncio.run(ask())

    def postgres_pids(self) -> list[int]:
        pids = [self.postmaster]
        for pid in _children(self.postmaster):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if serves(title.strip(), self.database):
                pids.append(pid)
        return pids

    def sample(self) -> dict[str, dict[int, float]]:
        """CPU seconds so far of each process, by service and pid."""
        return {"postgres": _cpu_of(self.postgres_pids()), "redis": _cpu_of(list(self.redis))}


def _cpu_of(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        try:
            found[pid] = cpu_seconds(pid)
        except OSError:
            continue  # ended while we looked
    return found


def used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two samples; a process that started in between counts from zero."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())

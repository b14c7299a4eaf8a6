"""Helpers of the fault tests: realtime nodes on the private services, and the data they carry.

:class:`Cluster` starts, restarts and kills nodes pointed at the private PostgreSQL+Redis pair
(:class:`~tests.faults.services.PrivateServices`) by their own pid; :class:`World` makes users,
conversations and workloads straight in the private database. The fixtures that build them are
in ``tests/faults/conftest.py``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg

from tests.faults.harness import History, Peer, Workload
from tests.faults.services import PrivateServices
from tests.support import TICK, ServiceProcess, free_port

NODE_ENV = {
    "MM_RATE_PER_S": "1000",
    "MM_RATE_BURST": "2000",
    "MM_MAX_CONNECTIONS_PER_USER": "8",
    "MM_PRESENCE_TTL_S": str(60 * TICK),
    # A SIGTERM drain waits out pending presence graces; tests need no 5 s default.
    "MM_PRESENCE_GRACE_S": str(20 * TICK),
    # Every Redis/PostgreSQL call gives up quickly, so an outage turns into refusals fast.
    "MM_REALTIME_IO_TIMEOUT_S": str(10 * TICK),
    "MM_LOG_LEVEL": "WARNING",
}


class Cluster:
    """Realtime nodes on the private services; each one stopped or killed by its own pid."""

    def __init__(self, services: PrivateServices) -> None:
        self.services = services
        self.nodes: list[ServiceProcess] = []

    def node(self, name: str, **env: str) -> ServiceProcess:
        port = free_port()
        extra = NODE_ENV | {
            "MM_REALTIME_PORT": str(port),
            "MM_NODE_ID": f"{name}-{port}",
            "MM_DATABASE_URL": self.services.database_url,
            "MM_REDIS_URL": self.services.redis_url,
        }
        proc = ServiceProcess("realtime", port, extra | env)
        self.nodes.append(proc)
        return proc.start()

    def restart(self, proc: ServiceProcess, **env: str) -> ServiceProcess:
        """A fresh process of the same node (same id and port), with ``env`` changed."""
        assert proc.proc is not None and proc.proc.poll() is not None, "still running"
        proc.env = proc.env | env
        for name in [k for k, v in env.items() if v == ""]:
            proc.env.pop(name)
        return proc.start()

    @staticmethod
    def url(proc: ServiceProcess) -> str:
        return f"ws://127.0.0.1:{proc.port}/"

    def close(self) -> None:
        for proc in self.nodes:
            if proc.proc is not None and proc.proc.poll() is None:
                proc.proc.kill()
                proc.proc.wait(100 * TICK)


_emails = itertools.count()


@dataclass
class World:
    """Users and conversations made straight in the private database."""

    db: asyncpg.Pool[asyncpg.Record]
    make_token: Callable[..., str]
    users: list[int] = field(default_factory=list)

    async def user(self) -> int:
        email = f"f{next(_emails)}-{secrets.token_hex(4)}@example.test"
        uid = await self.db.fetchval(
            "INSERT INTO users (email, password_hash) VALUES ($1, 'x') RETURNING id", email
        )
        return int(uid)

    async def conversation(self, *members: int) -> int:
        cid = int(await self.db.fetchval("INSERT INTO conversations DEFAULT VALUES RETURNING id"))
        await self.db.executemany(
            "INSERT INTO conversation_members (conversation_id, user_id) VALUES ($1, $2)",
            [(cid, m) for m in members],
        )
        return cid

    async def workload(
        self,
        urls: list[str],
        *,
        pairs: int = 4,
        seed: int = 0,
        interval: float = 2 * TICK,
        burst: int = 1,
    ) -> tuple[Workload, list[Peer], History]:
        """``pairs`` two-person conversations plus one group of everyone's first user."""
        history = History()
        users = [(await self.user(), await self.user()) for _ in range(pairs)]
        group = await self.conversation(*(a for a, _ in users))
        peers = []
        for i, (a, b) in enumerate(users):
            cid = await self.conversation(a, b)
            for j, user in enumerate((a, b)):
                cids = [cid, group] if j == 0 else [cid]
                peers.append(
                    Peer(
                        user=user,
                        token=self.make_token(user),
                        urls=urls,
                        cids=cids,
                        history=history,
                        seed=seed * 1000 + 2 * i + j,
                        interval=interval,
                        burst=burst,
                    )
                )
        return Workload(peers, history), peers, history

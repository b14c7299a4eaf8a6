"""Fault tests: a private PostgreSQL+Redis pair, realtime nodes on it, users and a workload.

Everything here is marked ``fault``. The private services are started once per session
(:class:`~tests.faults.services.PrivateServices`, migrated with ``alembic upgrade head``) and
stopped at its end; nodes are child processes pointed at them through MM_DATABASE_URL and
MM_REDIS_URL, killed or stopped by their own pid (``tests/faults/support.py``). The shared
services are never touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from alembic import command
from tests.db_support import alembic_config
from tests.faults.services import PrivateServices
from tests.faults.support import NODE_ENV, Cluster, World

# Re-exported for the test modules that import them from here.
__all__ = ["NODE_ENV", "Cluster", "World"]

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.fault)


@pytest.fixture(scope="session")
def private() -> Iterator[PrivateServices]:
    services = PrivateServices()
    try:
        services.start()
        command.upgrade(alembic_config(services.database_url), "head")
        yield services
    finally:
        services.close()


@pytest.fixture
def cluster(private: PrivateServices) -> Iterator[Cluster]:
    c = Cluster(private)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
async def pdb(private: PrivateServices) -> AsyncIterator[asyncpg.Pool[asyncpg.Record]]:
    """A pool on the private database (lazy, so it survives the PostgreSQL faults)."""
    pool = await asyncpg.create_pool(private.dsn, min_size=0, max_size=4)
    yield pool
    await pool.close()


@pytest.fixture
def world(pdb: asyncpg.Pool[asyncpg.Record], make_token: Callable[..., str]) -> World:
    return World(pdb, make_token)

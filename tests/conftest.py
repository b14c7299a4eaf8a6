"""Session set-up against the real PostgreSQL+PostGIS and Redis that the test command started.

A test is an **integration** test when it needs a service: it asks for the shared test
environment (``settings``, or anything built on it: ``redis``, ``sessions``, ``api``, the real
nodes), the fault tests' private services, or the browser, or its module is marked
``pytest.mark.integration`` by hand. Every other test is a unit test: ``make test-unit``
(``pytest -m "not integration"``) runs those alone, with no PostgreSQL or Redis reachable.

The first integration test of a run gets a fresh database (``MM_TEST_DATABASE``, default
``mergemeet_test``) built by ``alembic upgrade head``, so the migrations are tested by every
run; ``redis`` flushes its Redis database (``MM_TEST_REDIS_DB``, default 1). A run of unit tests
builds nothing. The environment is set before anything reads settings, and child processes (the
real servers) inherit it. Several suites can run side by side by giving each its own database
name and Redis database number.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from alembic import command
from common.db import make_engine, make_sessionmaker
from common.redisclient import RedisClient, redis_client
from common.settings import Settings, get_settings
from common.tokens import KeySet, issue_token, keyset_from_settings
from tests.db_support import (
    TEST_DB,
    TEST_DB_URL,
    TEST_REDIS_URL,
    alembic_config,
    recreate_database,
)
from tests.db_support import with_path as _with_path
from tests.support import TICK, free_port

# Re-exported for the test modules that import them from here.
__all__ = ["TEST_DB", "TEST_DB_URL", "_with_path", "alembic_config"]

_DATA_DIR = Path(tempfile.mkdtemp(prefix="mm-test-"))

os.environ.update(
    {
        "MM_ENV": "test",
        "MM_DATABASE_URL": TEST_DB_URL,
        "MM_REDIS_URL": TEST_REDIS_URL,
        "MM_DATA_DIR": str(_DATA_DIR),
        "MM_LOG_LEVEL": "WARNING",
        # Child nodes bound their SIGTERM drain well inside ServiceProcess.stop's kill timeout
        # (200 TICKs), so a slow drain on a loaded machine ends in a clean exit, not a -9.
        "MM_REALTIME_DRAIN_S": str(100 * TICK),
    }
)
get_settings.cache_clear()

#: Fixtures that reach a service; a test whose fixtures include one is an integration test.
SERVICE_FIXTURES = frozenset({"_database", "private", "browser"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``integration`` every test that reaches a service through its fixtures (before
    ``-m`` selects)."""
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def _services_of_marked_tests(request: pytest.FixtureRequest) -> None:
    """A test marked ``integration`` by hand (no service fixture) gets the test database too."""
    if request.node.get_closest_marker("integration") is not None:
        request.getfixturevalue("_database")


@pytest.fixture(scope="session")
def _database() -> Iterator[None]:
    """The fresh test database, migrated to head: built once, by the first test that needs it."""
    asyncio.run(recreate_database(TEST_DB_URL, TEST_DB))
    command.upgrade(alembic_config(), "head")
    yield


@pytest.fixture(scope="session")
def settings(_database: None) -> Settings:
    """The test environment's settings, its database built (this makes a test integration)."""
    return get_settings()


@pytest.fixture(scope="session")
def keys(settings: Settings) -> KeySet:
    return keyset_from_settings(settings, with_private=True)


@pytest.fixture(scope="session")
def make_token(settings: Settings, keys: KeySet) -> Callable[..., str]:
    """Sign an access token the way the API does (other claims by keyword)."""

    def make(user_id: int, token_version: int = 0, **overrides: object) -> str:
        options: dict[str, object] = {
            "user_id": user_id,
            "token_version": token_version,
            "audience": settings.jwt_audience,
            "issuer": settings.jwt_issuer,
            "ttl_s": settings.access_token_ttl_s,
        } | overrides
        return issue_token(keys, **options)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return make_sessionmaker(engine)


@pytest.fixture(scope="session")
async def redis(settings: Settings) -> AsyncIterator[RedisClient]:
    client = redis_client(settings.redis_url)
    await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture(scope="session")
async def api_url(settings: Settings, redis: RedisClient) -> AsyncIterator[str]:
    """The real API served by uvicorn on a real loopback socket, in this test process."""
    from api.main import create_app

    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(TICK)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
async def api(api_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api_url, timeout=100 * TICK) as client:
        yield client


@pytest.fixture(autouse=True)
async def _fail_on_loop_errors() -> AsyncIterator[None]:
    """Fail a test when the event loop reports an exception nobody handled."""
    errors: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield
    loop.set_exception_handler(previous)
    assert not errors, f"unhandled event-loop exceptions: {errors}"

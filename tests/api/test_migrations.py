"""Data migrations on a database of their own: the interest catalogue is there without the seed."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from alembic import command
from api.seed import INTERESTS
from tests.conftest import TEST_DB, TEST_DB_URL, _with_path, alembic_config

SCRATCH_DB = f"{TEST_DB}_migrations"
SCRATCH_URL = _with_path(TEST_DB_URL, f"/{SCRATCH_DB}")
# A database of its own on the test PostgreSQL, reached without a fixture.
pytestmark = pytest.mark.integration


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(_with_path(TEST_DB_URL, "/postgres").replace("+asyncpg", ""))
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def _catalogue() -> dict[str, str]:
    connection = await asyncpg.connect(SCRATCH_URL.replace("+asyncpg", ""))
    try:
        rows = await connection.fetch("SELECT slug, label FROM interests")
    finally:
        await connection.close()
    return {row["slug"]: row["label"] for row in rows}


async def test_interest_catalogue_migration_up_and_down() -> None:
    await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{SCRATCH_DB}"')
    try:
        config = alembic_config(SCRATCH_URL)
        # alembic's env runs its own event loop: keep it off this test's loop.
        await asyncio.to_thread(command.upgrade, config, "head")
        catalogue = await _catalogue()
        # Everything the development seed offers is in every migrated database, same labels.
        assert {slug: catalogue.get(slug) for slug in INTERESTS} == {
            slug: slug.replace("-", " ").title() for slug in INTERESTS
        }
        await asyncio.to_thread(command.downgrade, config, "0001")
        assert await _catalogue() == {}
        await asyncio.to_thread(command.upgrade, config, "head")  # and again: idempotent
        assert len(await _catalogue()) == len(catalogue)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')

"""The schema: migrations from empty, no drift from the models, and a PostGIS query through them."""

from __future__ import annotations

import datetime as dt

import asyncpg
import pytest
from geoalchemy2 import Geography
from sqlalchemy import cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from alembic import command
from common.models import Profile, User
from tests.conftest import TEST_DB_URL, _with_path, alembic_config

SCRATCH_DB = "mergemeet_migrations_check"
# ``scratch_db_url`` reaches the test PostgreSQL without a service fixture.
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def scratch_db_url() -> str:
    admin = await asyncpg.connect(_with_path(TEST_DB_URL, "/postgres").replace("+asyncpg", ""))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{SCRATCH_DB}"')
    finally:
        await admin.close()
    return _with_path(TEST_DB_URL, f"/{SCRATCH_DB}")


def test_migrations_upgrade_downgrade_upgrade_and_match_models(scratch_db_url: str) -> None:
    config = alembic_config(scratch_db_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")
    command.check(config)  # raises when the models and the migrated schema differ


async def test_email_is_unique_case_insensitively(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    from sqlalchemy.exc import IntegrityError

    async with sessions() as session:
        session.add(User(email="Case@Example.com", password_hash="x"))
        await session.commit()
    async with sessions() as session:
        session.add(User(email="case@example.COM", password_hash="x"))
        with pytest.raises(IntegrityError):
            await session.commit()


def _point(lon: float, lat: float) -> object:
    return func.ST_GeogFromText(f"SRID=4326;POINT({lon} {lat})")


async def test_postgis_distance_orders_known_points(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    # Paris centre, then points at increasing distances: Versailles, Orléans, Lyon, Marseille.
    places = {
        "versailles": (2.1301, 48.8049),
        "marseille": (5.3698, 43.2965),
        "orleans": (1.9093, 47.9030),
        "lyon": (4.8357, 45.7640),
    }
    async with sessions() as session:
        for name, (lon, lat) in places.items():
            user = User(email=f"geo-{name}@example.com", password_hash="x")
            session.add(user)
            await session.flush()
            session.add(
                Profile(
                    user_id=user.id,
                    display_name=name,
                    birth_date=dt.date(1990, 1, 1),
                    gender="woman",
                    location=_point(lon, lat),
                )
            )
        await session.commit()

    paris = cast(_point(2.3522, 48.8566), Geography)
    distance = func.ST_Distance(Profile.location, paris)
    async with sessions() as session:
        rows = (
            await session.execute(
                select(Profile.display_name, distance / 1000)
                .where(Profile.display_name.in_(places))
                .order_by(distance)
            )
        ).all()
        within_200km = (
            (
                await session.execute(
                    select(Profile.display_name)
                    .where(Profile.display_name.in_(places))
                    .where(func.ST_DWithin(Profile.location, paris, 200_000))
                    .order_by(Profile.display_name)
                )
            )
            .scalars()
            .all()
        )

    assert [name for name, _ in rows] == ["versailles", "orleans", "lyon", "marseille"]
    km = {name: value for name, value in rows}
    assert 15 < km["versailles"] < 20
    assert 385 < km["lyon"] < 400
    assert within_200km == ["orleans", "versailles"]

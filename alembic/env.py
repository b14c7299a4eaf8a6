"""Alembic environment: the URL and metadata come from ``common``; runs on asyncpg."""

import asyncio

from geoalchemy2 import alembic_helpers
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import async_engine_from_config

from alembic import context
from common.models import MESSAGE_PARTITIONS, Base
from common.settings import get_settings

config = context.config
target_metadata = Base.metadata
url = config.attributes.get("database_url") or get_settings().database_url

# PostGIS owns these; they are not ours to create or drop.
_POSTGIS_TABLES = frozenset({"spatial_ref_sys"})
# The partitions of ``messages`` (migration 0007): the model is the partitioned parent, whose
# columns and keys the partitions take; their own names are the migration's business.
_PARTITIONS = frozenset(f"messages_p{r}" for r in range(MESSAGE_PARTITIONS))


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    if type_ == "table" and (name in _POSTGIS_TABLES or name in _PARTITIONS):
        return False
    included = alembic_helpers.include_object(  # type: ignore[no-untyped-call]
        obj, name, type_, reflected, compare_to
    )
    return bool(included)


def _configure(connection: Connection | None = None) -> None:
    context.configure(
        connection=connection,
        url=None if connection is not None else url,
        target_metadata=target_metadata,
        include_object=include_object,
        process_revision_directives=alembic_helpers.writer,
        render_item=alembic_helpers.render_item,
        compare_type=True,
        literal_binds=connection is None,
    )


def _run_sync(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_online() -> None:
    engine = async_engine_from_config(
        {"sqlalchemy.url": url}, prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
    await engine.dispose()


if context.is_offline_mode():
    _configure()
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())

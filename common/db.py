"""The SQLAlchemy async engine and session factory for the API (realtime uses raw asyncpg)."""

from __future__ import annotations

from typing import Final

from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from common.settings import Settings

#: Every API session's settings. JIT off: PostGIS prices its functions so high that short
#: discovery queries cross ``jit_above_cost`` and spent 20-60 ms compiling code for a 30-50 ms
#: query (``docs/BENCHMARKS.md``, *Discovery latency*); no API query runs long enough to gain.
SESSION_SETTINGS: Final = {"jit": "off"}


def make_engine(settings: Settings) -> AsyncEngine:
    """One pooled engine per process; ``pool_pre_ping`` survives a PostgreSQL restart."""
    return create_async_engine(
        settings.database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_pool_size,
        pool_pre_ping=True,
        pool_timeout=10,
        connect_args={"server_settings": dict(SESSION_SETTINGS)},
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)

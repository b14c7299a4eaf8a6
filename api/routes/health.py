"""Liveness and readiness of the API process."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import StateDep
from api.errors import Unavailable
from common.redisclient import ping

router = APIRouter(tags=["health"])
_CHECK_TIMEOUT_S = 2.0


class Health(BaseModel):
    status: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(state: StateDep) -> Health:
    """PostgreSQL and Redis both answer."""
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            async with state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            await ping(state.redis)
    except Exception as exc:  # any failure of either store means "not ready"
        raise Unavailable(f"dependency unavailable: {type(exc).__name__}") from exc
    return Health(status="ready")

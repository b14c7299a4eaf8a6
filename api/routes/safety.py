"""Blocks and reports: a user's safety tools; logic lives in ``api/services/safety.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import CurrentUser, RedisDep, SessionDep
from api.schemas.matches import BIGINT_MAX
from api.schemas.safety import (
    BlockIn,
    BlockList,
    BlockOut,
    ReportIn,
    ReportList,
    ReportOut,
)
from api.services import safety as service

router = APIRouter(prefix="/api", tags=["safety"])


@router.post("/blocks", response_model=BlockOut, status_code=201)
async def block(
    body: BlockIn, user: CurrentUser, session: SessionDep, redis: RedisDep, response: Response
) -> BlockOut:
    """Block someone: you vanish from each other everywhere and any match between you ends."""
    out, created = await service.block(session, redis, user_id=user.id, target_id=body.user_id)
    if not created:
        response.status_code = 200
    return out


@router.delete("/blocks/{user_id}", status_code=204, response_class=Response)
async def unblock(
    user_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)],
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
) -> Response:
    """Unblock someone; a match the block ended is not restored."""
    await service.unblock(session, redis, user_id=user.id, target_id=user_id)
    return Response(status_code=204)


@router.get("/blocks", response_model=BlockList)
async def list_blocks(user: CurrentUser, session: SessionDep) -> BlockList:
    """The people you blocked, newest first."""
    return await service.list_blocks(session, user_id=user.id)


@router.post("/reports", response_model=ReportOut, status_code=201)
async def report(
    body: ReportIn, user: CurrentUser, session: SessionDep, redis: RedisDep
) -> ReportOut:
    """Report someone to the moderators, with optional references to their messages."""
    return await service.report(session, redis, reporter_id=user.id, body=body)


@router.get("/reports", response_model=ReportList)
async def my_reports(user: CurrentUser, session: SessionDep) -> ReportList:
    """The reports you filed and where each one stands."""
    return await service.my_reports(session, reporter_id=user.id)

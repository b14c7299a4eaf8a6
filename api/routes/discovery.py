"""Discovery: the one route that lists people nearby; all logic lives in the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.schemas.discovery import (
    CURSOR_MAX_CHARS,
    DISCOVERY_PAGE_DEFAULT,
    DISCOVERY_PAGE_MAX,
    DiscoveryPage,
)
from api.services import discovery as service

router = APIRouter(prefix="/api", tags=["discovery"])


@router.get("/discovery", response_model=DiscoveryPage)
async def discover(
    user: CurrentUser,
    session: SessionDep,
    settings: SettingsDep,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=DISCOVERY_PAGE_MAX)] = DISCOVERY_PAGE_DEFAULT,
) -> DiscoveryPage:
    """People nearby whose preferences and yours match both ways, best first, one page."""
    return await service.discover(session, settings, viewer_id=user.id, cursor=cursor, limit=limit)

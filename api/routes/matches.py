"""Likes, passes, the who-liked-me count, matches and unmatch; logic lives in the service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.deps import CurrentUser, RedisDep, SessionDep, SettingsDep
from api.schemas.discovery import CURSOR_MAX_CHARS
from api.schemas.matches import (
    BIGINT_MAX,
    MATCHES_PAGE_DEFAULT,
    MATCHES_PAGE_MAX,
    LikesReceived,
    MatchPage,
    SwipeIn,
    SwipeResult,
)
from api.services import matching as service

router = APIRouter(prefix="/api", tags=["matches"])


@router.post("/likes", response_model=SwipeResult)
async def like(
    body: SwipeIn,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> SwipeResult:
    """Like someone; if they already liked you, this creates your match and its conversation."""
    return await service.swipe(
        session, redis, settings, user_id=user.id, target_id=body.target_id, kind="like"
    )


@router.post("/passes", response_model=SwipeResult)
async def pass_(
    body: SwipeIn,
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
    settings: SettingsDep,
) -> SwipeResult:
    """Pass on someone: they leave your discovery until the cooldown ends."""
    return await service.swipe(
        session, redis, settings, user_id=user.id, target_id=body.target_id, kind="pass"
    )


@router.get("/likes/received/count", response_model=LikesReceived)
async def likes_received(user: CurrentUser, session: SessionDep) -> LikesReceived:
    """How many people liked you and are still waiting for your answer."""
    return await service.likes_received(session, user_id=user.id)


@router.get("/matches", response_model=MatchPage)
async def list_matches(
    user: CurrentUser,
    session: SessionDep,
    cursor: Annotated[str | None, Query(max_length=CURSOR_MAX_CHARS)] = None,
    limit: Annotated[int, Query(ge=1, le=MATCHES_PAGE_MAX)] = MATCHES_PAGE_DEFAULT,
) -> MatchPage:
    """Your matches, newest first, with each person's card, last message and unread count."""
    return await service.list_matches(session, user_id=user.id, cursor=cursor, limit=limit)


@router.delete("/matches/{match_id}", status_code=204, response_class=Response)
async def unmatch(
    match_id: Annotated[int, Path(ge=1, le=BIGINT_MAX)],
    user: CurrentUser,
    session: SessionDep,
    redis: RedisDep,
) -> Response:
    """Unmatch: the conversation closes for both of you and you no longer see each other."""
    await service.unmatch(session, redis, user_id=user.id, match_id=match_id)
    return Response(status_code=204)

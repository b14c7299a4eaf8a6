"""FastAPI dependencies and their ``Annotated`` aliases, the only way routes get shared things.

``SessionDep`` is one transaction-scoped session per request; ``CurrentUser`` verifies the bearer
token (pinned algorithm, token version compared with the database) and loads an active, unbanned
user; ``AdminUser`` re-reads the admin flag from the database on every request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import Forbidden, NotAuthenticated
from api.state import AppState
from common.models import User
from common.redisclient import RedisClient
from common.settings import Settings
from common.tokens import TokenError, verify_token

_bearer = HTTPBearer(auto_error=False)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.mm
    return state


StateDep = Annotated[AppState, Depends(get_state)]


def get_settings_dep(state: StateDep) -> Settings:
    return state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_redis(state: StateDep) -> RedisClient:
    return state.redis


RedisDep = Annotated[RedisClient, Depends(get_redis)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def get_current_user(
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise NotAuthenticated("a bearer token is required")
    settings = state.settings
    try:
        claims = verify_token(
            credentials.credentials,
            state.keys,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
        )
    except TokenError as exc:
        raise NotAuthenticated(f"token refused: {exc.code}", code=f"token_{exc.code}") from exc
    user = await session.get(User, claims.user_id)
    if user is None or not user.is_active or user.deleted_at is not None:
        raise NotAuthenticated("account not active", code="token_revoked")
    if user.token_version != claims.token_version:
        raise NotAuthenticated("token revoked", code="token_revoked")
    if user.banned_until is not None and user.banned_until > dt.datetime.now(dt.UTC):
        raise Forbidden("account banned", code="banned")
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin_user(user: CurrentUser, session: SessionDep) -> User:
    await session.refresh(user, attribute_names=["is_admin"])
    if not user.is_admin:
        raise Forbidden("admins only", code="admin_required")
    return user


AdminUser = Annotated[User, Depends(get_admin_user)]

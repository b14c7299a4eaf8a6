"""The API's composition root: builds the app, its shared state and its routers.

``uvicorn api.main:app`` serves the module-level ``app``; tests call :func:`create_app` with
their own settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import ERROR_RESPONSES, install_error_handlers
from api.routes import (
    admin,
    auth,
    conversations,
    discovery,
    health,
    interests,
    matches,
    notifications,
    photos,
    profiles,
    safety,
    web,
)
from api.services.housekeeping import run_housekeeping
from api.state import AppState
from common.db import make_engine, make_sessionmaker
from common.logs import setup_logging
from common.redisclient import redis_client
from common.settings import Settings, get_settings
from common.tasks import cancel_and_wait
from common.tokens import keyset_from_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings.log_level)
        engine = make_engine(settings)
        redis = redis_client(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
        app.state.mm = AppState(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            redis=redis,
            keys=keyset_from_settings(settings, with_private=True),
        )
        housekeeping = (
            asyncio.create_task(
                run_housekeeping(app.state.mm.sessions, settings.housekeeping_interval_s),
                name="housekeeping",
            )
            if settings.housekeeping_interval_s > 0
            else None
        )
        try:
            yield
        finally:
            await cancel_and_wait(housekeeping)
            await redis.aclose()
            await engine.dispose()

    app = FastAPI(
        title="MergeMeet API",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(auth.router)
    app.include_router(profiles.router)
    app.include_router(interests.router)
    app.include_router(photos.router)
    app.include_router(discovery.router)
    app.include_router(matches.router)
    app.include_router(conversations.router)
    app.include_router(safety.router)
    app.include_router(notifications.router)
    app.include_router(admin.router)
    app.include_router(web.router)
    return app


app = create_app()

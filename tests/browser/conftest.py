"""A real browser against the real services: headless Debian Chromium driven by Playwright.

The API is served by uvicorn on a loopback socket in this process (its settings point the pages
at the test's realtime node), the realtime node is a child process whose Origin allow-list holds
the API's origin, and the browser is the system Chromium (``/usr/bin/chromium``, installed by
``make test``): nothing downloads a browser. Users get a password that the tests type. The
constants and the sign-in helpers are in ``tests/browser/support.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import uvicorn
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.passwords import hash_password
from common.geo import ewkt
from common.models import Conversation, ConversationMember, Match, Profile, User
from common.settings import Settings
from tests.browser.support import (
    ACCESS_TTL_S,
    CHROMIUM,
    CHROMIUM_ARGS,
    NODE_ENV,
    PASSWORD,
    UI_WAIT_MS,
    Stack,
    WebUser,
    open_chat,
    sign_in,
)
from tests.support import TICK, ServiceProcess, free_port

# Re-exported for the test modules that import them from here.
__all__ = ["ACCESS_TTL_S", "PASSWORD", "Stack", "WebUser", "open_chat", "sign_in"]

_PASSWORD_HASH = hash_password(PASSWORD)
_numbers = itertools.count(1)
expect.set_options(timeout=UI_WAIT_MS)


@pytest.fixture(scope="session")
async def stack(settings: Settings, redis: Redis) -> AsyncIterator[Stack]:
    """The API (in-process, real socket) and one realtime node that allows the API's origin."""
    from api.main import create_app

    api_port, ws_port = free_port(), free_port()
    ws_url = f"ws://127.0.0.1:{ws_port}"
    api_url = f"http://127.0.0.1:{api_port}"
    node_id = f"web-{ws_port}"
    node = ServiceProcess(
        "realtime",
        ws_port,
        NODE_ENV
        | {
            "MM_REALTIME_PORT": str(ws_port),
            "MM_NODE_ID": node_id,
            "MM_REALTIME_PUBLIC_URL": ws_url,
            "MM_ALLOWED_ORIGINS": api_url,
        },
    )
    app = create_app(
        settings.model_copy(
            update={"realtime_public_url": ws_url, "access_token_ttl_s": ACCESS_TTL_S}
        )
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=api_port, log_config=None, lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(TICK)
    if task.done():
        task.result()
    assert server.started, "the API did not start"
    await asyncio.to_thread(node.start)
    try:
        yield Stack(api_url=api_url, ws_url=ws_url, node_id=node_id)
    finally:
        code = await asyncio.to_thread(node.stop)
        server.should_exit = True
        await task
        assert code == 0, f"realtime node did not stop cleanly, see {node.log_path}"


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture
async def new_context(
    browser: Browser, stack: Stack
) -> AsyncIterator[Callable[[], Awaitable[BrowserContext]]]:
    """Fresh browser contexts (separate storage, like separate devices), closed after the test.

    An uncaught JavaScript exception in any of their pages fails the test.
    """
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def watch(page: Page) -> None:
        page.on("pageerror", lambda error: errors.append(f"{page.url}: {error}"))

    async def make() -> BrowserContext:
        context = await browser.new_context(base_url=stack.api_url)
        context.set_default_timeout(UI_WAIT_MS)
        context.on("page", watch)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        await context.close()
    assert not errors, f"uncaught exceptions in the pages: {errors}"


@pytest.fixture
def web_user(sessions: async_sessionmaker[AsyncSession]) -> Callable[..., Awaitable[WebUser]]:
    """A user with a complete profile and the password :data:`PASSWORD`."""

    async def create(name: str = "User", *, is_admin: bool = False) -> WebUser:
        n = next(_numbers)
        email = f"web{n}-{secrets.token_hex(3)}@test.mergemeet.dev"
        async with sessions() as session, session.begin():
            user = User(
                email=email,
                password_hash=_PASSWORD_HASH,
                is_admin=is_admin,
                email_verified_at=dt.datetime.now(dt.UTC),
            )
            session.add(user)
            await session.flush()
            session.add(
                Profile(
                    user_id=user.id,
                    display_name=name,
                    birth_date=dt.date(1994, 4, 4),
                    gender="woman",
                    pref_genders=["man", "woman"],
                    location=ewkt(48.8566, 2.3522),
                    location_updated_at=dt.datetime.now(dt.UTC),
                    is_complete=True,
                )
            )
            return WebUser(id=user.id, email=email, name=name)

    return create


@pytest.fixture
def match_users(sessions: async_sessionmaker[AsyncSession]) -> Callable[..., Awaitable[int]]:
    """Match two users the way a mutual like does: a match row and a two-member conversation."""

    async def match(a: WebUser, b: WebUser) -> int:
        async with sessions() as session, session.begin():
            conversation = Conversation()
            session.add(conversation)
            await session.flush()
            low, high = sorted((a.id, b.id))
            session.add(Match(user_low_id=low, user_high_id=high, conversation_id=conversation.id))
            session.add_all(
                ConversationMember(conversation_id=conversation.id, user_id=u) for u in (a.id, b.id)
            )
            return conversation.id

    return match

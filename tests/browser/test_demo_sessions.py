"""The demo client's history, outbox and tabs: scroll-back by REST pages, an outbox that survives
a reload (resent with the same ``cmid``, stored once), and a duplicated tab that shares the
session without signing either tab out (refresh tokens rotate; reuse revokes the family).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from playwright.async_api import BrowserContext, Page, WebSocketRoute, expect
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from common.models import Message
from tests.api.test_matches import add_messages
from tests.browser.conftest import Stack, WebUser, open_chat
from tests.browser.test_chat import bodies, send
from tests.support import TICK

ContextMaker = Callable[[], Awaitable[BrowserContext]]
UserMaker = Callable[..., Awaitable[WebUser]]
Matcher = Callable[[WebUser, WebUser], Awaitable[int]]

HISTORY = 130  # more than two pages of 50: the first page and two scroll-backs


async def _seqs(page: Page) -> list[int]:
    values = await page.locator("#messages li.msg:not(.pending)").evaluate_all(
        "items => items.map(li => Number(li.dataset.seq))"
    )
    return [int(v) for v in values]


async def test_scrolling_up_loads_the_whole_history_page_by_page(
    new_context: ContextMaker,
    web_user: UserMaker,
    match_users: Matcher,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    cid = await match_users(alice, bob)
    await add_messages(sessions, cid, [alice.id if n % 2 else bob.id for n in range(HISTORY)])
    page = await open_chat(await new_context(), alice)
    await expect(page.locator("#messages li.msg")).to_have_count(50)
    assert await _seqs(page) == list(range(HISTORY - 49, HISTORY + 1))
    await expect(page.locator("#load-earlier")).to_be_visible()

    for _ in range(10):  # bounded: two more pages are needed
        if await page.locator("#history-start").count():
            break
        await page.locator("#messages").evaluate("list => { list.scrollTop = 0; }")
        await asyncio.sleep(5 * TICK)
    await expect(page.locator("#history-start")).to_be_visible()
    assert await _seqs(page) == list(range(1, HISTORY + 1))  # all of it, once each, in order
    await expect(page.locator("#load-earlier")).to_have_count(0)
    # The message that was at the top stays in view instead of jumping to the bottom.
    top = await page.locator("#messages").evaluate("list => list.scrollTop")
    assert top < await page.locator("#messages").evaluate("l => l.scrollHeight - l.clientHeight")


async def _route(
    context: BrowserContext,
    stack: Stack,
    drop_sent: Callable[[dict[str, Any]], bool],
    drop_received: Callable[[dict[str, Any]], bool],
) -> list[dict[str, Any]]:
    """Route the context's realtime sockets, dropping chosen frames each way; returns the
    frames the page sent through (decoded)."""
    sent: list[dict[str, Any]] = []

    def handler(page_side: WebSocketRoute) -> None:
        server_side = page_side.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if not drop_sent(frame):
                sent.append(frame)
                server_side.send(message)

        def from_server(message: str | bytes) -> None:
            if not drop_received(json.loads(message)):
                page_side.send(message)

        page_side.on_message(from_page)
        server_side.on_message(from_server)

    await context.route_web_socket(re.compile(re.escape(stack.ws_url) + ".*"), handler)
    return sent


async def _stored(sessions: async_sessionmaker[AsyncSession], cid: int, body: str) -> int:
    async with sessions() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.conversation_id == cid, Message.body == body)
        )
    return int(count or 0)


async def test_the_outbox_survives_a_reload_and_is_stored_once(
    new_context: ContextMaker,
    web_user: UserMaker,
    match_users: Matcher,
    stack: Stack,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    cid = await match_users(alice, bob)
    page_b = await open_chat(await new_context(), bob)
    context_a = await new_context()
    lossy = True  # until the reload: the first send never reaches the node, the ack is lost
    sent = await _route(
        context_a,
        stack,
        drop_sent=lambda f: lossy and f["type"] == "send" and f["body"] == "never reached",
        # The echo of its own message would settle the outbox as the ack does: lost too.
        drop_received=lambda f: lossy and f["type"] in ("ack", "msg"),
    )
    page_a = await open_chat(context_a, alice)
    await send(page_a, "never reached")
    await send(page_a, "stored, ack lost")
    await expect(page_b.locator("#messages li.msg.theirs")).to_have_count(1)
    assert await _stored(sessions, cid, "stored, ack lost") == 1
    assert await _stored(sessions, cid, "never reached") == 0
    await expect(page_a.locator("#messages li.msg.pending")).to_have_count(2)
    saved = json.loads(
        await page_a.evaluate(f"sessionStorage.getItem('mm.demo.outbox:{alice.id}')") or "[]"
    )
    cmids = {item["body"]: item["cmid"] for item in saved}
    assert set(cmids) == {"never reached", "stored, ack lost"}

    lossy = False
    await page_a.reload()  # before the 8 s ack timeout could resend anything
    await expect(page_a.locator("#conn")).to_have_attribute("data-state", "ready")
    await expect(page_a.locator("#messages li.msg.pending")).to_have_count(0)
    assert await bodies(page_a, ".mine") == ["stored, ack lost", "never reached"]
    await expect(page_b.locator("#messages li.msg.theirs")).to_have_count(2)
    assert await bodies(page_b, ".theirs") == ["stored, ack lost", "never reached"]
    for body in cmids:
        assert await _stored(sessions, cid, body) == 1  # never duplicated
    resent = [f for f in sent if f["type"] == "send"]
    assert {f["cmid"] for f in resent} <= set(cmids.values())  # the original cmids, no new ones
    assert await page_a.evaluate(f"sessionStorage.getItem('mm.demo.outbox:{alice.id}')") is None


async def test_a_duplicated_tab_shares_the_session_and_neither_is_signed_out(
    new_context: ContextMaker, web_user: UserMaker, match_users: Matcher
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    await match_users(alice, bob)
    page_b = await open_chat(await new_context(), bob)
    context = await new_context()
    first = await open_chat(context, alice)
    refreshes: list[int] = []
    context.on(
        "response",
        lambda r: refreshes.append(r.status) if r.url.endswith("/api/auth/refresh") else None,
    )

    # "Duplicate tab" copies the tab's sessionStorage into the new tab before its page loads.
    storage = await first.evaluate("JSON.stringify(Object.assign({}, sessionStorage))")
    copy = await context.new_page()
    await copy.add_init_script(
        "(() => { if (sessionStorage.length) return;"
        f" for (const [k, v] of Object.entries({storage})) sessionStorage.setItem(k, v); }})();"
    )
    await copy.goto("/demo")
    await expect(copy.locator("#conn")).to_have_attribute("data-state", "ready")
    await expect(copy.locator("#login-view")).to_be_hidden()

    # Access tokens live 30 s and the node asks for a fresh one 26 s early: within a few
    # seconds both tabs have refreshed, more than once, from the one rotating refresh token.
    for _ in range(300):  # bounded by time below
        if len(refreshes) >= 4:
            break
        await asyncio.sleep(TICK)
    assert len(refreshes) >= 4 and set(refreshes) == {200}, refreshes
    for page in (first, copy):
        await expect(page.locator("#conn")).to_have_attribute("data-state", "ready")
        await expect(page.locator("#login-view")).to_be_hidden()
    await send(first, "from the first tab")
    await send(copy, "from the copy")
    await expect(page_b.locator("#messages li.msg.theirs")).to_have_count(2)

    # A reload of either still signs in; separate sign-ins in one browser stay separate.
    await copy.reload()
    await expect(copy.locator("#conn")).to_have_attribute("data-state", "ready")
    other = await open_chat(context, bob)
    await expect(other.locator("#me-name")).to_have_text(bob.email)
    await expect(first.locator("#me-name")).to_have_text(alice.email)
    await expect(first.locator("#conn")).to_have_attribute("data-state", "ready")

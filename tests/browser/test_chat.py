"""Two people chat in two browser contexts through the demo page, the real API and a real node.

What a person sees is what is asserted: live messages, the typing indicator, read receipts, the
presence dot, the pending state of a message sent while offline, and after the network comes
back every missed message shown once, in order (and stored once in PostgreSQL).

Measured here (Chromium 156): ``context.set_offline(True)`` leaves an open WebSocket open and
silently swallows what the page sends on it, while frames from the server still arrive. So the
client closes its socket itself on the browser's ``offline`` event and reconnects on ``online``;
a socket that dies without that event is caught by the application ``ping`` timeout.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import asyncpg
from playwright.async_api import BrowserContext, Page, expect
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import seed
from common.settings import Settings
from tests.browser.conftest import WebUser, open_chat

ContextMaker = Callable[[], Awaitable[BrowserContext]]
UserMaker = Callable[..., Awaitable[WebUser]]
Matcher = Callable[[WebUser, WebUser], Awaitable[int]]


async def send(page: Page, body: str) -> None:
    await page.fill("#draft", body)
    await page.press("#draft", "Enter")


async def bodies(page: Page, side: str = "") -> list[str]:
    """The bodies of the stored (not pending) messages on screen, top to bottom."""
    selector = f"#messages li.msg{side}:not(.pending) .body"
    return [text.strip() for text in await page.locator(selector).all_inner_texts()]


async def test_live_chat_typing_and_read_receipts(
    new_context: ContextMaker, web_user: UserMaker, match_users: Matcher
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    await match_users(alice, bob)
    page_a = await open_chat(await new_context(), alice)
    page_b = await open_chat(await new_context(), bob)
    await expect(page_a.locator("#peer-name")).to_have_text("Bob")
    await expect(page_b.locator("#peer-name")).to_have_text("Alice")

    # Typing shows on the other side and goes away when the message lands.
    await page_a.fill("#draft", "Hi Bo")
    await page_a.type("#draft", "b")
    await expect(page_b.locator("#typing")).to_be_visible()
    await expect(page_b.locator("#typing-text")).to_have_text("Alice is typing…")
    await page_a.press("#draft", "Enter")
    await expect(page_b.locator("#messages li.msg.theirs .body")).to_have_text(["Hi Bob"])
    await expect(page_b.locator("#typing")).to_be_hidden()

    # Bob has the conversation open, so he reads it at once: Alice sees the receipt.
    await expect(page_a.locator("#messages li.msg.mine .receipt")).to_have_text("✓✓ Read")
    await expect(page_a.locator("#messages li.msg.pending")).to_have_count(0)

    await send(page_b, "Hey Alice!")
    await send(page_b, "How are you?")
    await expect(page_a.locator("#messages li.msg .body")).to_have_text(
        ["Hi Bob", "Hey Alice!", "How are you?"]
    )
    await expect(page_b.locator("#messages li.msg.mine .receipt")).to_have_text("✓✓ Read")
    # The sidebar preview follows the conversation.
    await expect(page_a.locator("#matches .match-preview")).to_have_text("How are you?")


async def test_offline_client_catches_up_once_in_order_and_resends_its_outbox(
    new_context: ContextMaker,
    web_user: UserMaker,
    match_users: Matcher,
    settings: Settings,
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    cid = await match_users(alice, bob)
    page_a = await open_chat(await new_context(), alice)
    context_b = await new_context()
    page_b = await open_chat(context_b, bob)
    await send(page_a, "before")
    await expect(page_b.locator("#messages li.msg .body")).to_have_text(["before"])

    # Bob's network goes away. Chromium keeps an open WebSocket through set_offline, so the
    # client closes it itself on the `offline` event and waits for `online`.
    await context_b.set_offline(True)
    await expect(page_b.locator("#conn")).to_have_attribute("data-state", "offline")

    missed = [f"missed {i}" for i in range(1, 6)]
    for body in missed:
        await send(page_a, body)
    await expect(page_a.locator("#messages li.msg.mine:not(.pending)")).to_have_count(6)

    # Bob writes while offline: the message waits, visibly, in his outbox.
    await send(page_b, "sent while offline")
    pending = page_b.locator("#messages li.msg.pending")
    await expect(pending).to_have_count(1)
    await expect(pending.locator(".meta")).to_have_text("◷ waiting for connection")
    cmid = await pending.get_attribute("data-cmid")
    assert cmid

    await context_b.set_offline(False)
    await expect(page_b.locator("#conn")).to_have_attribute("data-state", "ready")
    # Everything Alice sent while Bob was away, once each and in order, then his own message.
    expected = ["before", *missed, "sent while offline"]
    await expect(page_b.locator("#messages li.msg .body")).to_have_text(expected)
    await expect(page_b.locator("#messages li.msg.pending")).to_have_count(0)
    await expect(page_a.locator("#messages li.msg .body")).to_have_text(expected)
    seqs = [
        int(s)
        for s in await page_b.locator("#messages li.msg").evaluate_all(
            "items => items.map(li => li.dataset.seq)"
        )
    ]
    assert seqs == list(range(1, len(expected) + 1))

    connection = await asyncpg.connect(settings.asyncpg_dsn)
    try:
        rows = await connection.fetch(
            "SELECT seq, body, cmid FROM messages WHERE conversation_id = $1 ORDER BY seq", cid
        )
    finally:
        await connection.close()
    assert [r["body"] for r in rows] == expected
    assert [r["cmid"] for r in rows].count(cmid) == 1


async def test_presence_dot_follows_the_match_online_and_offline(
    new_context: ContextMaker, web_user: UserMaker, match_users: Matcher
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    await match_users(alice, bob)
    page_a = await open_chat(await new_context(), alice)
    card = page_a.locator("#matches li.match")
    status = page_a.locator("#peer-status")
    await expect(card).to_have_attribute("data-presence", "away")

    context_b = await new_context()
    await open_chat(context_b, bob)
    await expect(card).to_have_attribute("data-presence", "online")
    await expect(status).to_have_text(re.compile(r"^online · age \d+$"))

    # Offline is announced after the node's grace period without any socket of Bob's.
    await context_b.close()
    await expect(card).to_have_attribute("data-presence", "away")
    await expect(status).not_to_contain_text("online")


async def test_a_seeded_demo_user_signs_in_with_one_click(
    new_context: ContextMaker, sessions: async_sessionmaker[AsyncSession]
) -> None:
    """What `make run` offers a newcomer: the demo buttons sign in Alice, matched with Bob."""
    async with sessions() as session, session.begin():
        await seed.seed_interests(session)
        await seed.seed_demo_users(session)
    page = await (await new_context()).new_page()
    await page.goto("/demo")
    await page.click("#demo-users button[data-user=alice]")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "ready")
    await expect(page.locator("#me-name")).to_have_text(seed.demo_email("Alice"))
    await expect(page.locator("#peer-name")).to_have_text("Bob")

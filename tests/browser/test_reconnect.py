"""Frames lost on the way to a browser: the demo client recovers them with ``sync``, once each.

Playwright's WebSocket routing sits between the page and the real node (the page's socket still
connects to the node, from the page's origin), so a test can drop chosen server frames or cut
the connection without the browser's `offline` event, as a flaky network would.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from playwright.async_api import BrowserContext, WebSocketRoute, expect

from tests.browser.conftest import ACCESS_TTL_S, Stack, WebUser, open_chat
from tests.browser.test_chat import send
from tests.support import TICK

ContextMaker = Callable[[], Awaitable[BrowserContext]]
UserMaker = Callable[..., Awaitable[WebUser]]
Matcher = Callable[[WebUser, WebUser], Awaitable[int]]


@dataclass
class Link:
    """One routed socket: the page's side, the node's side, and what to drop from the node."""

    page: WebSocketRoute
    server: WebSocketRoute
    drop: Callable[[str], bool] = lambda _frame: False
    dropped: list[str] = field(default_factory=list)
    #: Every frame each way, decoded: what the page sent and what the node sent.
    sent: list[dict[str, Any]] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)

    def types(self, frames: list[dict[str, Any]]) -> list[str]:
        return [frame["type"] for frame in frames]


async def routed(context: BrowserContext, stack: Stack) -> list[Link]:
    """Route every realtime socket of ``context`` through a filter; returns the live list."""
    links: list[Link] = []

    def handler(page_side: WebSocketRoute) -> None:
        server_side = page_side.connect_to_server()
        link = Link(page_side, server_side)

        def from_page(message: str | bytes) -> None:
            text = message if isinstance(message, str) else message.decode()
            link.sent.append(json.loads(text))
            server_side.send(message)

        def from_server(message: str | bytes) -> None:
            text = message if isinstance(message, str) else message.decode()
            link.received.append(json.loads(text))
            if link.drop(text):
                link.dropped.append(text)
            else:
                page_side.send(message)

        page_side.on_message(from_page)
        server_side.on_message(from_server)
        links.append(link)

    await context.route_web_socket(re.compile(re.escape(stack.ws_url) + ".*"), handler)
    return links


async def test_a_missing_seq_is_fetched_with_sync_on_the_same_socket(
    new_context: ContextMaker, web_user: UserMaker, match_users: Matcher, stack: Stack
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    await match_users(alice, bob)
    page_a = await open_chat(await new_context(), alice)
    context_b = await new_context()
    links = await routed(context_b, stack)
    page_b = await open_chat(context_b, bob)
    messages_b = page_b.locator("#messages li.msg .body")

    await send(page_a, "one")
    await expect(messages_b).to_have_text(["one"])
    links[0].drop = lambda frame: (
        json.loads(frame) == {**json.loads(frame), "type": "msg", "body": "two"}
    )
    await send(page_a, "two")
    await send(page_a, "three")
    # Bob holds 1 and receives 3: he waits about a second for 2, then asks `sync` for it.
    await expect(messages_b).to_have_text(["one", "two", "three"])
    assert len(links[0].dropped) == 1, "the live frame of 'two' was not dropped"
    assert len(links) == 1, "recovered by reconnecting instead of on the same socket"


async def test_a_cut_connection_reconnects_with_backoff_and_syncs_what_it_missed(
    new_context: ContextMaker, web_user: UserMaker, match_users: Matcher, stack: Stack
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    await match_users(alice, bob)
    page_a = await open_chat(await new_context(), alice)
    context_b = await new_context()
    links = await routed(context_b, stack)
    page_b = await open_chat(context_b, bob)
    messages_b = page_b.locator("#messages li.msg .body")

    await send(page_a, "first")
    await expect(messages_b).to_have_text(["first"])
    # The network starts losing everything towards Bob; Alice's sends are still acked.
    links[0].drop = lambda _frame: True
    lost = [f"lost {i}" for i in range(1, 4)]
    for body in lost:
        await send(page_a, body)
    await expect(page_a.locator("#messages li.msg.mine .meta .receipt")).to_have_text("✓ Sent")
    await expect(page_a.locator("#messages li.msg:not(.pending)")).to_have_count(4)
    await expect(messages_b).to_have_text(["first"])

    # Then the connection dies without a clean close (abnormal closure, as after a NAT timeout).
    await links[0].server.close()
    await links[0].page.close(code=1006, reason="cut by the test")
    await expect(page_b.locator("#conn")).to_have_attribute("data-state", "ready")
    await expect(messages_b).to_have_text(["first", *lost])
    assert len(links) == 2, "the page did not open a new socket"
    # Live again on the new socket, both ways.
    await send(page_b, "back")
    await expect(page_a.locator("#messages li.msg .body")).to_have_text(["first", *lost, "back"])


async def test_the_token_is_refreshed_on_the_open_socket_when_the_node_asks(
    new_context: ContextMaker, web_user: UserMaker, match_users: Matcher, stack: Stack
) -> None:
    alice, bob = await web_user("Alice"), await web_user("Bob")
    await match_users(alice, bob)
    page_a = await open_chat(await new_context(), alice)
    context_b = await new_context()
    links = await routed(context_b, stack)
    page_b = await open_chat(context_b, bob)
    link = links[0]

    # The node sends `reauth` (26 s before a 30 s token expires); the page answers with `auth`
    # carrying a fresh token from /api/auth/refresh, and the node confirms with a new `ready`.
    for _ in range(int(ACCESS_TTL_S / TICK)):
        if link.types(link.received).count("ready") >= 2:
            break
        await asyncio.sleep(TICK)
    assert "reauth" in link.types(link.received), link.types(link.received)
    auths = [frame for frame in link.sent if frame["type"] == "auth"]
    readies = [frame for frame in link.received if frame["type"] == "ready"]
    assert len(auths) >= 2 and len(readies) >= 2, (link.types(link.sent), readies)
    assert auths[1]["token"] != auths[0]["token"]
    assert readies[1]["expires_at"] > readies[0]["expires_at"]
    assert len(links) == 1, "the page reconnected instead of re-authenticating"
    assert link.types(link.sent).count("sync") == 1, "a re-auth is not a reconnect: no new sync"

    await send(page_b, "still here")
    await expect(page_a.locator("#messages li.msg .body")).to_have_text(["still here"])

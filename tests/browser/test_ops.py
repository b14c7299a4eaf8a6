"""The ops page in a real browser: an admin watches the connection count rise and fall."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from playwright.async_api import BrowserContext, Page, expect

from tests.browser.conftest import Stack, WebUser, open_chat, sign_in

ContextMaker = Callable[[], Awaitable[BrowserContext]]
UserMaker = Callable[..., Awaitable[WebUser]]
Matcher = Callable[[WebUser, WebUser], Awaitable[int]]


async def totals_add_up(page: Page) -> None:
    """The cluster total is the sum of the rows (other suites' nodes may share this Redis)."""
    total, rows = await page.evaluate(
        """() => [document.getElementById("t-connections").textContent,
                  [...document.querySelectorAll("#nodes tr[data-node]")]
                    .map(tr => tr.children[3].textContent)]"""
    )
    assert int(total) == sum(int(r) for r in rows), (total, rows)


async def test_ops_page_shows_connections_rise_and_fall(
    new_context: ContextMaker, web_user: UserMaker, match_users: Matcher, stack: Stack
) -> None:
    admin = await web_user("Ops", is_admin=True)
    ops = await sign_in(await new_context(), "/ops", admin)
    row = ops.locator(f'#nodes tr[data-node="{stack.node_id}"]')
    await expect(row).to_have_count(1)
    connections = row.locator("td:nth-child(4)")
    await expect(ops.locator("#conn")).to_have_attribute("data-state", "ready")
    # Only the browser tests use this node and their earlier pages are closed: the next
    # heartbeats count no socket.
    await expect(connections).to_have_text("0")
    await totals_add_up(ops)

    alice, bob = await web_user("Alice"), await web_user("Bob")
    await match_users(alice, bob)
    chat_a = await open_chat(await new_context(), alice)
    chat_b = await open_chat(await new_context(), bob)
    await expect(connections).to_have_text("2")
    await totals_add_up(ops)
    await expect(row.locator("td:nth-child(5)")).to_have_text("2")  # users online
    uptime = await row.locator("td:nth-child(3)").inner_text()
    assert uptime.endswith("s") or "m" in uptime, uptime

    await chat_a.close()
    await expect(connections).to_have_text("1")
    await chat_b.close()
    await expect(connections).to_have_text("0")
    await totals_add_up(ops)


async def test_ops_page_refuses_a_non_admin(new_context: ContextMaker, web_user: UserMaker) -> None:
    someone = await web_user("Not Admin")
    page = await sign_in(await new_context(), "/ops", someone)
    await expect(page.locator("#login-error")).to_have_text("This account is not an admin.")
    await expect(page.locator("#ops-view")).to_be_hidden()

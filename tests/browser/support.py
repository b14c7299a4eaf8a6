"""Helpers of the browser tests: Chromium's flags, the stack's knobs, and signing in as a person.

The fixtures (the API and a realtime node for the pages, the browser, users with the password
:data:`PASSWORD`) are in ``tests/browser/conftest.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from playwright.async_api import BrowserContext, Page, expect

from tests.support import TICK

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # the test runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "browser-test-password-7"
#: How long a page may take to show something: page loads, logins (argon2), heartbeats.
UI_WAIT_MS = int(200 * TICK * 1000)
#: Access tokens live 30 s (the least the settings allow) and the node asks for a fresh one 26 s
#: before expiry, so every page refreshes its token on the open socket within seconds.
ACCESS_TTL_S = 30
#: Realtime node knobs: a heartbeat (and so the ops page's connection count) every second.
NODE_ENV = {
    "MM_REAUTH_BEFORE_S": "26",
    "MM_PRESENCE_TTL_S": "3",
    "MM_PRESENCE_GRACE_S": "1",
    "MM_HEARTBEAT_S": "2",
    "MM_LOG_LEVEL": "WARNING",
}


@dataclass(frozen=True)
class WebUser:
    id: int
    email: str
    name: str


@dataclass(frozen=True)
class Stack:
    api_url: str
    ws_url: str
    node_id: str


async def sign_in(context: BrowserContext, path: str, user: WebUser) -> Page:
    """Open ``path`` and sign in through the page's form, as a person would."""
    page = await context.new_page()
    await page.goto(path)
    await page.fill("#email", user.email)
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    return page


async def open_chat(context: BrowserContext, user: WebUser) -> Page:
    """Sign in to the demo and wait until the socket is live (authenticated and synced)."""
    page = await sign_in(context, "/demo", user)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "ready")
    return page

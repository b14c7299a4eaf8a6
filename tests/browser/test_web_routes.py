"""The web routes over plain HTTP: pages and files, their headers, the config, the admin view."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from tests.browser.conftest import PASSWORD, Stack, WebUser
from tests.support import TICK

UserMaker = Callable[..., Awaitable[WebUser]]


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=100 * TICK) as client:
        yield client


async def login(http: httpx.AsyncClient, user: WebUser) -> dict[str, str]:
    answer = await http.post("/api/auth/login", json={"email": user.email, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


async def test_pages_and_files_are_served_with_a_strict_policy(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    for path, kind in [
        ("/demo", "text/html"),
        ("/ops", "text/html"),
        ("/static/client.js", "text/javascript"),
        ("/static/demo.js", "text/javascript"),
        ("/static/ops.js", "text/javascript"),
        ("/static/style.css", "text/css"),
    ]:
        answer = await http.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(kind), path
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert f"connect-src 'self' {stack.ws_url}" in policy
        assert answer.headers["x-content-type-options"] == "nosniff"
    root = await http.get("/")
    assert root.status_code == 307
    assert root.headers["location"] == "/demo"


@pytest.mark.parametrize(
    "path",
    [
        "/static/web.py",
        "/static/..%2Froutes%2Fweb.py",
        "/static/%2E%2E%2F%2E%2E%2Fpyproject.toml",
        "/static/nothing.js",
        "/static/",
    ],
)
async def test_only_the_static_table_is_served(http: httpx.AsyncClient, path: str) -> None:
    answer = await http.get(path)
    assert answer.status_code == 404, path
    assert "import" not in answer.text


async def test_config_names_the_realtime_url_and_nothing_secret(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    answer = await http.get("/web/config")
    assert answer.status_code == 200
    assert answer.json() == {"realtime_url": stack.ws_url}


async def test_cluster_view_is_for_admins_only(
    http: httpx.AsyncClient, web_user: UserMaker, stack: Stack
) -> None:
    assert (await http.get("/api/admin/nodes")).status_code == 401
    someone = await web_user("Someone")
    refused = await http.get("/api/admin/nodes", headers=await login(http, someone))
    assert refused.status_code == 403
    assert refused.json()["code"] == "admin_required"

    admin = await web_user("Admin", is_admin=True)
    view = (await http.get("/api/admin/nodes", headers=await login(http, admin))).json()
    node = next(n for n in view["nodes"] if n["id"] == stack.node_id)
    assert node["address"] == stack.ws_url
    assert node["uptime_s"] >= 0
    assert node["heartbeat_age_s"] < 10
    for key in ("messages_per_s", "batch_size_avg", "commit_ms_avg", "delivery_lag_ms"):
        assert node[key] >= 0
    assert view["totals"]["nodes"] == len(view["nodes"]) >= 1
    assert view["totals"]["connections"] == sum(n["connections"] for n in view["nodes"])

"""The admin console through the real API: 403 for non-admins on every route, bans that end
sessions and expire, report resolution, the word list and its cache, stats, the audit log."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import moderation
from common.cluster import NodeInfo, publish_heartbeat, remove_node
from common.events import Ban, ModerationChanged, TokenBump
from common.models import AdminAuditLog, ModerationWord, RefreshToken, User
from common.moderation import VERSION_KEY
from common.rediskeys import get_token_version
from tests.api.conftest import TEST_PASSWORD, UserFactory
from tests.api.test_safety import events_since, make_match, stream_mark, trust_of
from tests.support import TICK


async def _audit(
    sessions: async_sessionmaker[AsyncSession], admin_id: int
) -> list[tuple[str, str, int | None]]:
    async with sessions() as session:
        rows = (
            await session.execute(
                select(AdminAuditLog.action, AdminAuditLog.target_type, AdminAuditLog.target_id)
                .where(AdminAuditLog.admin_id == admin_id)
                .order_by(AdminAuditLog.id)
            )
        ).all()
    return [tuple(row) for row in rows]  # type: ignore[misc]


async def test_every_admin_route_refuses_non_admins(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    """Walks the served app's route table, so a new admin route cannot forget AdminUser."""
    user = await user_factory()
    admin = await user_factory(is_admin=True)
    paths = (await api.get("/openapi.json")).json()["paths"]
    checked = 0
    for path, operations in paths.items():
        if not path.startswith("/api/admin"):
            continue
        url = re.sub(r"\{[^}]+\}", "1", path)
        for method in operations:
            body: dict[str, Any] | None = {} if method in ("post", "put", "patch") else None
            anonymous = await api.request(method, url, json=body)
            assert anonymous.status_code == 401, (method, path)
            refused = await api.request(method, url, json=body, headers=user.headers)
            assert (refused.status_code, refused.json()["code"]) == (403, "admin_required"), (
                method,
                path,
            )
            allowed = await api.request(method, url, json=body, headers=admin.headers)
            assert allowed.status_code != 403, (method, path)
            checked += 1
    assert checked >= 15


async def test_admin_flag_is_reread_from_the_database(
    api: httpx.AsyncClient, user_factory: UserFactory, sessions: async_sessionmaker[AsyncSession]
) -> None:
    admin = await user_factory(is_admin=True)
    assert (await api.get("/api/admin/stats", headers=admin.headers)).status_code == 200
    async with sessions() as session, session.begin():
        user = await session.get(User, admin.id)
        assert user is not None
        user.is_admin = False
    assert (await api.get("/api/admin/stats", headers=admin.headers)).status_code == 403


async def _wait_until(predicate: Callable[[], Any], *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(TICK)
    raise AssertionError("condition not reached in time")


async def test_ban_ends_sessions_publishes_events_and_expires_by_itself(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    make_token: Callable[..., str],
) -> None:
    admin = await user_factory(is_admin=True)
    user = await user_factory()
    login = {"email": user.email, "password": TEST_PASSWORD}
    assert (await api.post("/api/auth/login", json=login)).status_code == 200
    assert (await api.get("/api/notifications", headers=user.headers)).status_code == 200

    mark = await stream_mark(redis)
    ban_s = 40 * TICK  # 2 s at the default TICK
    response = await api.post(
        f"/api/admin/users/{user.id}/ban",
        json={"duration_s": max(1, round(ban_s)), "reason": "spam"},
        headers=admin.headers,
    )
    assert response.status_code == 200, response.text
    assert response.json()["banned_until"] is not None and not response.json()["banned_permanently"]
    published = await events_since(redis, mark)
    bans = [e for e in published if isinstance(e, Ban) and e.user == user.id]
    assert len(bans) == 1 and bans[0].until is not None and bans[0].until > time.time()
    assert TokenBump(user=user.id, version=1) in published
    assert await get_token_version(redis, user.id) == 1
    async with sessions() as session:
        live_refresh = await session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
        )
    assert live_refresh == 0

    # The old token is dead; a token of the new version meets the ban; login is refused.
    old = await api.get("/api/notifications", headers=user.headers)
    assert (old.status_code, old.json()["code"]) == (401, "token_revoked")
    fresh = {"Authorization": f"Bearer {make_token(user.id, token_version=1)}"}
    banned = await api.get("/api/notifications", headers=fresh)
    assert (banned.status_code, banned.json()["code"]) == (403, "banned")
    refused = await api.post("/api/auth/login", json=login)
    assert (refused.status_code, refused.json()["code"]) == (403, "banned")

    async def usable() -> bool:
        return (await api.get("/api/notifications", headers=fresh)).status_code == 200

    await _wait_until(usable, timeout=ban_s + 100 * TICK)
    assert (await api.post("/api/auth/login", json=login)).status_code == 200
    assert [a for a, _, t in await _audit(sessions, admin.id) if t == user.id] == ["user.ban"]


async def test_permanent_ban_unban_and_self_ban(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
    make_token: Callable[..., str],
) -> None:
    admin = await user_factory(is_admin=True)
    user = await user_factory()
    for body in (
        {"reason": "x"},
        {"reason": "x", "duration_s": 60, "permanent": True},
        {"permanent": True},
    ):
        assert (
            await api.post(f"/api/admin/users/{user.id}/ban", json=body, headers=admin.headers)
        ).status_code == 422
    mark = await stream_mark(redis)
    forever = await api.post(
        f"/api/admin/users/{user.id}/ban",
        json={"permanent": True, "reason": "fraud"},
        headers=admin.headers,
    )
    assert forever.json()["banned_permanently"] is True
    assert Ban(user=user.id, until=None) in await events_since(redis, mark)
    fresh = {"Authorization": f"Bearer {make_token(user.id, token_version=1)}"}
    assert (await api.get("/api/blocks", headers=fresh)).status_code == 403

    lifted = await api.post(f"/api/admin/users/{user.id}/unban", headers=admin.headers)
    assert lifted.status_code == 200 and lifted.json()["banned_until"] is None
    assert (await api.get("/api/blocks", headers=fresh)).status_code == 200
    self_ban = await api.post(
        f"/api/admin/users/{admin.id}/ban",
        json={"permanent": True, "reason": "oops"},
        headers=admin.headers,
    )
    assert (self_ban.status_code, self_ban.json()["code"]) == (400, "invalid_target")
    missing = await api.post(
        "/api/admin/users/999999999/ban",
        json={"permanent": True, "reason": "x"},
        headers=admin.headers,
    )
    assert missing.status_code == 404
    assert [a for a, _, _ in await _audit(sessions, admin.id)] == ["user.ban", "user.unban"]


async def test_user_search_by_email_prefix_and_id(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    admin = await user_factory(is_admin=True)
    user = await user_factory()
    prefix = user.email.split("@")[0]
    by_email = await api.get(
        "/api/admin/users", params={"q": prefix.upper()}, headers=admin.headers
    )
    assert [item["id"] for item in by_email.json()["items"]] == [user.id]
    assert by_email.json()["items"][0]["email"] == user.email
    by_id = await api.get("/api/admin/users", params={"q": str(user.id)}, headers=admin.headers)
    assert user.id in [item["id"] for item in by_id.json()["items"]]
    wildcard = await api.get("/api/admin/users", params={"q": "%"}, headers=admin.headers)
    assert wildcard.json()["items"] == []
    one = await api.get(f"/api/admin/users/{user.id}", headers=admin.headers)
    assert one.json()["trust_score"] == 50


def _report(user_id: int) -> dict[str, Any]:
    return {"user_id": user_id, "type": "scam", "reason": "asked me for money on cash app"}


async def test_report_queue_and_resolutions(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    admin = await user_factory(is_admin=True)
    reporter, other_reporter, reported = (
        await user_factory(),
        await user_factory(),
        await user_factory(),
    )
    _, cid = await make_match(sessions, reporter, reported)
    body = _report(reported.id) | {"evidence": {"messages": [{"cid": cid, "seq": 1}]}}
    first = (await api.post("/api/reports", json=body, headers=reporter.headers)).json()
    second = (
        await api.post("/api/reports", json=_report(reported.id), headers=other_reporter.headers)
    ).json()

    queue = await api.get(
        "/api/admin/reports",
        params={"status": "pending", "type": "scam", "reported_id": reported.id},
        headers=admin.headers,
    )
    assert [item["id"] for item in queue.json()["items"]] == [second["id"], first["id"]]
    detail = (await api.get(f"/api/admin/reports/{first['id']}", headers=admin.headers)).json()
    assert detail["evidence_messages"][0]["body"] == "message 1"
    assert detail["evidence_messages"][0]["sender_id"] == reported.id
    assert (
        await api.get("/api/admin/reports", params={"status": "nope"}, headers=admin.headers)
    ).status_code == 422

    score = await trust_of(sessions, reported.id)
    warned = await api.post(
        f"/api/admin/reports/{first['id']}/resolve",
        json={"action": "warn", "note": "first warning"},
        headers=admin.headers,
    )
    assert warned.status_code == 200 and warned.json()["status"] == "warned"
    assert warned.json()["resolution_note"] == "first warning"
    assert await trust_of(sessions, reported.id) == score - 10
    system = (await api.get("/api/notifications", headers=reported.headers)).json()["items"]
    assert system[0]["kind"] == "system" and system[0]["payload"]["type"] == "warning"
    assert str(reporter.id) not in str(system[0]["payload"])  # the reporter stays anonymous
    again = await api.post(
        f"/api/admin/reports/{first['id']}/resolve",
        json={"action": "dismiss"},
        headers=admin.headers,
    )
    assert (again.status_code, again.json()["code"]) == (409, "report_resolved")
    mine = (await api.get("/api/reports", headers=reporter.headers)).json()["items"]
    assert mine[0]["status"] == "warned" and "resolution_note" not in mine[0]

    no_spec = await api.post(
        f"/api/admin/reports/{second['id']}/resolve", json={"action": "ban"}, headers=admin.headers
    )
    assert no_spec.status_code == 422
    mark = await stream_mark(redis)
    banned = await api.post(
        f"/api/admin/reports/{second['id']}/resolve",
        json={"action": "ban", "note": "scammer", "ban": {"duration_s": 3600}},
        headers=admin.headers,
    )
    assert banned.json()["status"] == "banned"
    assert any(
        isinstance(e, Ban) and e.user == reported.id for e in await events_since(redis, mark)
    )
    assert (await api.get("/api/notifications", headers=reported.headers)).status_code == 401
    audit = [(a, t) for a, _, t in await _audit(sessions, admin.id)]
    assert audit == [("report.warn", first["id"]), ("report.ban", second["id"])]

    # A user whose report was resolved can report that person again.
    assert (
        await api.post("/api/reports", json=_report(reported.id), headers=reporter.headers)
    ).status_code == 201


async def test_words_crud_invalidates_caches_and_reaches_check_text(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    admin, user = await user_factory(is_admin=True), await user_factory()
    async with sessions() as session:
        before = await moderation.get_matcher(session, redis)
    assert before.check("you are a zorblax").action == "allow"
    version = await redis.get(VERSION_KEY)

    mark = await stream_mark(redis)
    created = await api.post(
        "/api/admin/moderation/words",
        json={"pattern": "Zorblax", "category": "insult", "severity": 4, "action": "reject"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    word_id = created.json()["id"]
    assert ModerationChanged() in await events_since(redis, mark)
    assert await redis.get(VERSION_KEY) != version

    # Another process's cache (simulated: the module cache of this one) sees the new version.
    async with sessions() as session:
        assert (await moderation.get_matcher(session, redis)).check(
            "you are a zorblax"
        ).action == "reject"
    checked = await api.post(
        "/api/admin/moderation/check", json={"text": "ZORBLAX!"}, headers=admin.headers
    )
    assert checked.json() == {
        "action": "reject",
        "category": "insult",
        "matched": "Zorblax",
        "severity": 4,
    }

    duplicate = await api.post(
        "/api/admin/moderation/words",
        json={"pattern": "Zorblax", "category": "insult", "action": "warn"},
        headers=admin.headers,
    )
    assert (duplicate.status_code, duplicate.json()["code"]) == (409, "pattern_exists")
    for bad in (
        {"pattern": "(", "is_regex": True, "category": "x", "action": "warn"},
        {"pattern": "@nope", "category": "x", "action": "warn"},
        {"pattern": "ok", "category": "Bad Category", "action": "warn"},
        {"pattern": "ok", "category": "x", "action": "delete"},
        {"pattern": "ok", "category": "x", "action": "warn", "created_by": 1},
    ):
        assert (
            await api.post("/api/admin/moderation/words", json=bad, headers=admin.headers)
        ).status_code == 422, bad

    mark = await stream_mark(redis)
    patched = await api.patch(
        f"/api/admin/moderation/words/{word_id}", json={"action": "warn"}, headers=admin.headers
    )
    assert patched.json()["action"] == "warn"
    assert ModerationChanged() in await events_since(redis, mark)
    listing = (await api.get("/api/admin/moderation/words", headers=admin.headers)).json()
    assert any(item["id"] == word_id and item["action"] == "warn" for item in listing["items"])
    assert listing["errors"] == []

    # check_text, as the profile routes call it for a bio and a display name.
    score = await trust_of(sessions, user.id)
    async with sessions() as session:
        verdict = await moderation.check_text(
            session, redis, user_id=user.id, source="bio", text="a Zorblax here"
        )
    assert verdict.action == "warn"
    assert (
        await api.delete(f"/api/admin/moderation/words/{word_id}", headers=admin.headers)
    ).status_code == 204
    assert (
        await api.delete(f"/api/admin/moderation/words/{word_id}", headers=admin.headers)
    ).status_code == 404
    await api.post(
        "/api/admin/moderation/words",
        json={"pattern": "send nudes", "category": "sexual", "action": "reject"},
        headers=admin.headers,
    )
    async with sessions() as session:
        try:
            await moderation.check_texts(
                session,
                redis,
                user_id=user.id,
                texts={"display_name": "Send Nudes", "bio": "call 555 123 4567"},
            )
        except moderation.ContentRejected as exc:
            assert exc.code == "content_rejected" and exc.status == 422
            assert "Send" not in exc.detail
        else:
            raise AssertionError("a rejected display name must raise")
    assert await trust_of(sessions, user.id) == score - 3

    log = (
        await api.get(
            "/api/admin/moderation/log", params={"user_id": user.id}, headers=admin.headers
        )
    ).json()
    assert [(i["source"], i["action"], i["matched"]) for i in log["items"]] == [
        ("bio", "warn", "@phone"),
        ("display_name", "reject", "send nudes"),
        ("bio", "warn", "Zorblax"),
    ]
    rejected = await api.get(
        "/api/admin/moderation/log",
        params={"user_id": user.id, "action": "reject"},
        headers=admin.headers,
    )
    assert len(rejected.json()["items"]) == 1
    actions = [a for a, _, _ in await _audit(sessions, admin.id)]
    assert actions == [
        "moderation_word.create",
        "moderation_word.update",
        "moderation_word.delete",
        "moderation_word.create",
    ]
    audit_page = await api.get(
        "/api/admin/audit", params={"admin_id": admin.id, "limit": 2}, headers=admin.headers
    )
    page = audit_page.json()
    assert [item["action"] for item in page["items"]] == [
        "moderation_word.create",
        "moderation_word.delete",
    ]
    assert page["next_cursor"] is not None
    rest = await api.get(
        "/api/admin/audit",
        params={"admin_id": admin.id, "limit": 2, "cursor": page["next_cursor"]},
        headers=admin.headers,
    )
    assert [item["action"] for item in rest.json()["items"]] == [
        "moderation_word.update",
        "moderation_word.create",
    ]
    assert rest.json()["next_cursor"] is None


async def test_stats_count_and_show_live_nodes(
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    admin = await user_factory(is_admin=True)
    now = time.time()
    nodes = [
        NodeInfo(
            id="test-a",
            address="127.0.0.1:1",
            started_at=now,
            heartbeat_at=now,
            connections=7,
            users=5,
        ),
        NodeInfo(
            id="test-b",
            address="127.0.0.1:2",
            started_at=now,
            heartbeat_at=now,
            connections=3,
            users=3,
        ),
        NodeInfo(
            id="test-dead",
            address="127.0.0.1:3",
            started_at=now - 999,
            heartbeat_at=now - 999,
            connections=50,
            users=1,
        ),
    ]
    for node in nodes:
        await publish_heartbeat(redis, node, ttl_s=60)
    try:
        before = (await api.get("/api/admin/stats", headers=admin.headers)).json()
        a, b = await user_factory(), await user_factory()
        await make_match(sessions, a, b, messages=2)
        await api.post("/api/reports", json=_report(b.id), headers=a.headers)
        after = (await api.get("/api/admin/stats", headers=admin.headers)).json()
    finally:
        for node in nodes:
            await remove_node(redis, node.id)
    assert after["users"] == before["users"] + 2
    assert after["matches"] == before["matches"] + 1
    assert after["messages_today"] == before["messages_today"] + 2
    assert after["pending_reports"] == before["pending_reports"] + 1
    assert after["active_24h"] >= 2
    live = {node["id"]: node["connections"] for node in after["nodes"]}
    assert live.get("test-a") == 7 and live.get("test-b") == 3 and "test-dead" not in live
    assert after["live_connections"] == sum(live.values())


async def test_admin_tokens_of_a_normal_user_never_see_emails_elsewhere(
    api: httpx.AsyncClient, user_factory: UserFactory
) -> None:
    user, other = await user_factory(), await user_factory()
    await api.post("/api/blocks", json={"user_id": other.id}, headers=user.headers)
    await api.post("/api/reports", json=_report(other.id), headers=user.headers)
    for path in ("/api/blocks", "/api/reports"):
        assert other.email not in (await api.get(path, headers=user.headers)).text


async def test_matcher_cache_follows_the_version_other_processes_set(
    sessions: async_sessionmaker[AsyncSession], redis: Redis
) -> None:
    async with sessions() as session:
        first = await moderation.get_matcher(session, redis)
        assert await moderation.get_matcher(session, redis) is first  # cached, no reload
    # Another API process changes the list: the row lands, then that process bumps the version.
    async with sessions() as session, session.begin():
        word = ModerationWord(pattern="quuxword", category="test", severity=2, action="warn")
        session.add(word)
    try:
        async with sessions() as session:
            assert (await moderation.get_matcher(session, redis)) is first
        await redis.set(VERSION_KEY, "set-by-another-process")
        async with sessions() as session:
            reloaded = await moderation.get_matcher(session, redis)
        assert reloaded is not first
        assert reloaded.check("QUUXWORD").action == "warn"
    finally:
        async with sessions() as session, session.begin():
            await session.delete(await session.merge(word))
        await moderation.list_changed(redis)

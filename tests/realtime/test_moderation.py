"""The content filter and the low-trust daily cap on the realtime send path.

An admin edits the word list through the real API; the nodes reload it on the safety stream's
``ModerationChanged`` without a restart. Rejections answer ``content_rejected`` and store
nothing; the moderation log holds the matched term, never the body.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import string
from typing import Any

import asyncpg
import httpx
import pytest
from redis.asyncio import Redis

from common.codes import Err
from common.rediskeys import daily_counter_key
from common.trust import LOW_TRUST_THRESHOLD, daily_message_cap
from tests.api import conftest as api_conftest
from tests.api.conftest import UserFactory
from tests.realtime.conftest import Client, Nodes, client
from tests.realtime.test_integration_api import SECOND, chat, matched_pair
from tests.support import TICK

user_factory = api_conftest.user_factory


def odd_word() -> str:
    """A word no other rule or message uses (letters only: digits fold as leet)."""
    return "zq" + "".join(secrets.choice(string.ascii_lowercase) for _ in range(10))


async def send_until(c: Client, cid: int, body: str, want: str, tries: int = 20) -> dict[str, Any]:
    """Send ``body`` (fresh cmid each time) until the answer is of type ``want``; return it.

    A list change reaches the nodes within about a second: this bounds the wait for it.
    """
    answer: dict[str, Any] = {}
    for _ in range(tries):
        cmid = f"m{secrets.token_hex(6)}"
        answer = await c.request(type="send", cid=cid, cmid=cmid, body=body)
        if answer["type"] == want:
            answer["cmid"] = cmid
            return answer
        await asyncio.sleep(TICK)
    raise AssertionError(f"never got {want}; last answer {answer}")


async def poll_row(db: asyncpg.Pool[asyncpg.Record], sql: str, *args: Any) -> asyncpg.Record:
    for _ in range(40):
        row = await db.fetchrow(sql, *args)
        if row is not None:
            return row
        await asyncio.sleep(TICK)
    raise AssertionError(f"no row for {sql} {args}")


async def test_a_word_list_change_through_the_api_reaches_both_nodes_without_restart(
    nodes: Nodes,
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    admin = await user_factory(is_admin=True)
    p = await matched_pair(api, user_factory)
    a = await client(nodes.a, p.alice.token)
    b = await client(nodes.b, p.bob.token)
    word = odd_word()
    body = f"you are such a {word} honestly"
    await chat(a, b, p.cid, body)  # not a rule yet: delivered

    created = await api.post(
        "/api/admin/moderation/words",
        json={"pattern": word, "category": "harassment", "severity": 4, "action": "reject"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    rejected = await send_until(a, p.cid, body, "error")
    assert rejected["code"] == Err.CONTENT_REJECTED and rejected["retryable"] is False
    assert (await send_until(b, p.cid, body.upper(), "error"))["code"] == Err.CONTENT_REJECTED
    assert await db.fetchval("SELECT count(*) FROM messages WHERE cmid = $1", rejected["cmid"]) == 0
    # Earlier tries (before the reload) were delivered; the rejected one never is.
    with pytest.raises(AssertionError):
        await b.expect("msg", timeout=4 * TICK, cmid=rejected["cmid"])
    row = await poll_row(
        db,
        "SELECT source, category, action, matched FROM moderation_log"
        " WHERE user_id = $1 AND action = 'reject'",
        p.alice.id,
    )
    # The term, never the body.
    assert tuple(row) == ("message", "harassment", "reject", word)
    await poll_row(
        db,
        "SELECT 1 FROM trust_events WHERE user_id = $1 AND reason = 'content_rejected'",
        p.alice.id,
    )

    changed = await api.patch(
        f"/api/admin/moderation/words/{created.json()['id']}",
        json={"action": "warn"},
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.text
    ack = await send_until(a, p.cid, body, "ack")
    assert (await b.expect("msg", cid=p.cid, seq=ack["seq"]))["body"] == body
    warned = await poll_row(
        db,
        "SELECT matched FROM moderation_log WHERE user_id = $1 AND action = 'warn'",
        p.alice.id,
    )
    assert warned["matched"] == word
    bodies = await db.fetch("SELECT matched FROM moderation_log WHERE matched LIKE '%honestly%'")
    assert bodies == []
    await a.close()
    await b.close()


async def test_a_low_trust_user_is_held_to_the_daily_cap_and_others_are_not(
    nodes: Nodes,
    api: httpx.AsyncClient,
    user_factory: UserFactory,
    db: asyncpg.Pool[asyncpg.Record],
    redis: Redis,
) -> None:
    p = await matched_pair(api, user_factory)
    low = LOW_TRUST_THRESHOLD - 5
    cap = daily_message_cap(low)
    assert cap is not None
    await db.execute("UPDATE users SET trust_score = $2 WHERE id = $1", p.alice.id, low)
    # Trust is read at authentication; the day's count so far lives in Redis.
    today = dt.datetime.now(dt.UTC).date()
    await redis.set(daily_counter_key(p.alice.id, today), cap - 2)
    a = await client(nodes.a, p.alice.token)
    b = await client(nodes.b, p.bob.token)
    first = await chat(a, b, p.cid, "one of my last two today")
    second = await chat(a, b, p.cid, "and the last")
    assert second["seq"] == first["seq"] + 1
    over = await a.request(type="send", cid=p.cid, cmid="over-cap", body="one too many")
    assert (over["type"], over["code"]) == ("error", Err.DAILY_CAP)
    assert await db.fetchval("SELECT count(*) FROM messages WHERE cmid = 'over-cap'") == 0
    await b.quiet("msg", within=4 * TICK)
    # A user of ordinary trust is not counted at all.
    for i in range(3):
        await chat(b, a, p.cid, f"no cap for me {i}")
    assert await redis.get(daily_counter_key(p.bob.id, today)) is None
    await a.close()
    await b.close()


async def test_every_rejection_answers_the_send_that_asked(
    nodes: Nodes,
    api: httpx.AsyncClient,
    user_factory: UserFactory,
) -> None:
    admin = await user_factory(is_admin=True)
    p = await matched_pair(api, user_factory)
    word = odd_word()
    created = await api.post(
        "/api/admin/moderation/words",
        json={"pattern": word, "category": "spam", "severity": 2, "action": "reject"},
        headers=admin.headers,
    )
    assert created.status_code == 201, created.text
    a = await client(nodes.a, p.alice.token)
    b = await client(nodes.b, p.bob.token)
    await send_until(a, p.cid, word, "error")
    # Interleaved clean and rejected sends: each gets its own answer, in order, by rid.
    for i in range(5):
        clean = await a.request(type="send", cid=p.cid, cmid=f"c{i}", body=f"clean {i}")
        dirty = await a.request(type="send", cid=p.cid, cmid=f"d{i}", body=f"{word} {i}")
        assert clean["type"] == "ack" and dirty["code"] == Err.CONTENT_REJECTED
        assert (await b.expect("msg", cid=p.cid, seq=clean["seq"]))["body"] == f"clean {i}"
    await a.close()
    await b.close()
    assert SECOND > 0

"""Helpers of the ``/api/auth`` tests: fresh addresses and emails, registering, logging in,
refreshing, and reading what the API mailed.

Client addresses are simulated with ``X-Forwarded-For`` (uvicorn trusts it from loopback), so
each test throttles only itself: the counters live here, shared by every test module, so no two
tests anywhere get the same address or email. Mail is read from the development outbox folder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import re
from typing import Any

import httpx
from redis.asyncio import Redis

from api.services.mail import outbox_dir
from common.events import TokenBump, decode_event
from common.rediskeys import SAFETY_STREAM
from common.settings import Settings
from tests.support import TICK

PASSWORD = "a perfectly fine passphrase"
_ips = itertools.count(1)
_emails = itertools.count(1)


def fresh_ip() -> dict[str, str]:
    """Headers that make the request come from an address no other test uses."""
    n = next(_ips)
    return {"X-Forwarded-For": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"}


def fresh_email() -> str:
    return f"Person{next(_emails)}-{dt.datetime.now().timestamp():.0f}@Example.COM"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(api: httpx.AsyncClient, email: str | None = None, **fields: Any) -> Any:
    body = {
        "email": email or fresh_email(),
        "password": PASSWORD,
        "birth_date": "1990-01-31",
        "display_name": "Sam",
        "gender": "nonbinary",
    } | fields
    response = await api.post("/api/auth/register", json=body, headers=fresh_ip())
    assert response.status_code == 201, response.text
    return body["email"].lower(), response.json()


async def login(api: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await api.post(
        "/api/auth/login", json={"email": email, "password": password}, headers=fresh_ip()
    )


async def wait_for_mail(
    settings: Settings, to: str, kind: str, seen: set[str] | None = None
) -> dict[str, str]:
    """The newest mail of ``kind`` to ``to`` not in ``seen`` (names added to ``seen``)."""
    seen = seen if seen is not None else set()
    folder = outbox_dir(settings)
    for _ in range(100):
        for path in sorted(folder.glob("*.json"), reverse=True) if folder.exists() else []:
            if path.name in seen:
                continue
            mail: dict[str, str] = json.loads(path.read_text())
            if mail["to"] == to and mail["kind"] == kind:
                seen.add(path.name)
                return mail
        await asyncio.sleep(TICK)
    raise AssertionError(f"no {kind} mail to {to}")


def code_in(mail: dict[str, str]) -> str:
    match = re.search(r"\b(\d{6})\b", mail["body"])
    assert match
    return match.group(1)


async def token_bumps(redis: Redis, user_id: int) -> list[int]:
    entries: list[Any] = await redis.xrevrange(SAFETY_STREAM, count=500) or []
    versions = []
    for _, fields in entries:
        event = decode_event(bytes(fields[b"e"]))
        if isinstance(event, TokenBump) and event.user == user_id:
            versions.append(event.version)
    return versions


def field_errors(response: httpx.Response) -> list[tuple[Any, ...]]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "validation_error"
    return [tuple(e["loc"]) for e in body["detail"]]


async def refresh(api: httpx.AsyncClient, token: str) -> httpx.Response:
    return await api.post("/api/auth/refresh", json={"refresh_token": token})

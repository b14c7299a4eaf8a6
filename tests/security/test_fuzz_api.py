"""schemathesis against the served OpenAPI schema: every operation, valid and invalid inputs,
sent to the real uvicorn server as real users. No answer may be a 5xx, and every answer must
match what the schema documents (status code, content type, body schema).

The requests run in a worker thread (schemathesis and hypothesis are synchronous) while this
test's event loop keeps serving the API. They come from an address of their own
(``X-Forwarded-For``), so the fuzzer's rate-limit budgets are not other tests'. Operations that
end the caller's session (log out everywhere) run last; whatever the admin fuzzing created
(words, bans) is undone at the end so later tests see the database as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from redis.asyncio import Redis
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import moderation
from common.models import ModerationWord, User
from tests.api.conftest import UserFactory
from tests.security.conftest import Victim
from tests.support import TICK

EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 4}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Run after everything else: they end the caller's session.
LAST = {("POST", "/api/auth/logout-all"), ("DELETE", "/api/auth/me")}
FUZZ_ADDRESS = {"X-Forwarded-For": "10.254.254.254"}


def _fuzz(
    schema: Any, base_url: str, user_headers: dict[str, str], admin_headers: dict[str, str]
) -> dict[str, set[int]]:
    """Fuzz every operation; return the status codes each operation answered."""
    failures: list[str] = []
    covered: dict[str, set[int]] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (op.method.upper(), op.path) in LAST)
    with requests.Session() as session:
        for operation in operations:
            key = (operation.method.upper(), operation.path)
            as_admin = operation.path.startswith("/api/admin")
            headers = (admin_headers if as_admin else user_headers) | FUZZ_ADDRESS
            seen = covered.setdefault(f"{key[0]} {key[1]}", set())
            for mode, count in EXAMPLES.items():
                run = _one_operation(operation, mode, count, base_url, headers, session, seen)
                try:
                    run()
                except Unsatisfiable:
                    # Nothing to make invalid: an operation without parameters or body.
                    if mode is not GenerationMode.NEGATIVE:
                        raise
                # Collect every operation's failures (schemathesis raises exception groups).
                except (Exception, BaseExceptionGroup) as exc:
                    failures.append(f"{key} [{mode.value}]: {type(exc).__name__}: {exc}"[:2000])
    assert not failures, "\n\n".join(failures)
    return covered


def _one_operation(
    operation: Any,
    mode: GenerationMode,
    count: int,
    base_url: str,
    headers: dict[str, str],
    session: requests.Session,
    seen: set[int],
) -> Callable[[], None]:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        # The fuzzer must not replace the credentials with generated ones.
        case.headers = {
            k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"
        }
        response = case.call(base_url=base_url, headers=headers, session=session, timeout=30)
        seen.add(response.status_code)
        case.validate_response(response, checks=CHECKS)

    return run


async def test_every_operation_survives_fuzzing_and_matches_the_schema(
    api: httpx.AsyncClient,
    api_url: str,
    victim: Victim,
    user_factory: UserFactory,
    sessions: async_sessionmaker[AsyncSession],
    redis: Redis,
) -> None:
    spec = (await api.get("/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(spec)
    admin = await user_factory(is_admin=True)
    async with sessions() as session:
        last_word = (
            await session.scalar(
                select(ModerationWord.id).order_by(ModerationWord.id.desc()).limit(1)
            )
            or 0
        )
        banned_before = set(
            await session.scalars(select(User.id).where(User.banned_until.is_not(None)))
        )
    try:
        covered = await asyncio.wait_for(
            asyncio.to_thread(_fuzz, schema, api_url, victim.user.headers, admin.headers),
            timeout=6000 * TICK,
        )
    finally:
        async with sessions() as session, session.begin():
            await session.execute(delete(ModerationWord).where(ModerationWord.id > last_word))
            await session.execute(
                update(User)
                .where(User.banned_until.is_not(None), User.id.not_in(banned_before or {0}))
                .values(banned_until=None, ban_reason=None)
            )
        await moderation.list_changed(redis)
    operation_count = sum(
        1 for item in spec["paths"].values() for method in item if method != "parameters"
    )
    assert len(covered) == operation_count
    # The credentials worked: most operations answered a success at least once.
    succeeded = [label for label, statuses in covered.items() if any(s < 300 for s in statuses)]
    assert len(succeeded) >= operation_count // 2, covered

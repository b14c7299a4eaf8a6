"""The content filter in the API: the cached matcher, ``check_text`` and the moderation log.

Owns loading ``moderation_words`` into a :class:`common.moderation.Matcher` and keeping it
fresh. Each process caches one matcher tagged with the list's version, an opaque token in Redis
(:data:`common.moderation.VERSION_KEY`); every check reads that token (one GET) and reloads when
it changed, so several API processes agree without restarts. An admin change calls
:func:`list_changed` after its commit: new token, ``ModerationChanged`` on the safety stream for
the realtime nodes, local cache dropped.

For other routes (profiles: bio, display name; registration: display name) the entry point is
:func:`check_texts`: call it BEFORE changing anything in the request's session. A warn or
reject writes a ``moderation_log`` row (matched term only, never the text) and commits it; a
reject also costs trust (``content_rejected``) and raises :class:`ContentRejected` (422, code
``content_rejected``) unless ``raise_on_reject=False``. At registration there is no account
yet (``user_id=None``): the row names no user and no trust moves.

Must not: log or store the checked text.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ApiError
from api.services.matching import publish_after_commit
from api.services.trust import apply_trust
from common import events
from common.models import ModerationLog, ModerationWord
from common.moderation import VERSION_KEY, Matcher, Verdict, compile_rules
from common.redisclient import RedisClient
from common.redisedge import REDIS_FAILURES

log = logging.getLogger(__name__)


class ContentRejected(ApiError):
    status, code = 422, "content_rejected"


@dataclass(slots=True)
class _Cached:
    version: bytes | None
    matcher: Matcher


_cache: _Cached | None = None


async def _current_version(redis: RedisClient) -> bytes | None:
    value = await redis.get(VERSION_KEY)
    return value if isinstance(value, bytes) or value is None else str(value).encode()


async def load_matcher(session: AsyncSession) -> Matcher:
    """Compile the word list as the database holds it now."""
    rows = (
        await session.execute(
            select(
                ModerationWord.pattern,
                ModerationWord.is_regex,
                ModerationWord.category,
                ModerationWord.severity,
                ModerationWord.action,
            ).order_by(ModerationWord.id)
        )
    ).all()
    matcher = compile_rules(rows)
    if matcher.errors:
        log.warning("moderation rows skipped", extra={"errors": matcher.errors[:20]})
    return matcher


async def get_matcher(session: AsyncSession, redis: RedisClient) -> Matcher:
    """The cached matcher, reloaded when the list's version in Redis moved on."""
    global _cache
    try:
        # Read the version BEFORE loading: a change racing the load only causes one more
        # reload later, never a stale list cached under the new version.
        version = await _current_version(redis)
        if version is None:  # first use since Redis was empty: start a version
            await redis.set(VERSION_KEY, secrets.token_hex(8), nx=True)
            version = await _current_version(redis)
    except REDIS_FAILURES:
        # Redis is away: the cached list is the best we know; with none, read the database.
        if _cache is not None:
            return _cache.matcher
        version = None
    if _cache is not None and _cache.version == version and version is not None:
        return _cache.matcher
    matcher = await load_matcher(session)
    _cache = _Cached(version=version, matcher=matcher)
    return matcher


def forget_cache() -> None:
    global _cache
    _cache = None


async def list_changed(redis: RedisClient) -> None:
    """After an admin's change committed: new version, drop the local cache, tell the nodes."""
    forget_cache()
    try:
        await redis.set(VERSION_KEY, secrets.token_hex(8))
    except REDIS_FAILURES as exc:
        log.warning("moderation version not bumped", extra={"error": str(exc)})
    await publish_after_commit(redis, events.ModerationChanged())


def write_log(session: AsyncSession, *, user_id: int | None, source: str, verdict: Verdict) -> None:
    """Add a moderation_log row for a warn or reject (the matched term, never the text)."""
    if verdict.action == "allow" or verdict.category is None or verdict.matched is None:
        return
    session.add(
        ModerationLog(
            user_id=user_id,
            source=source[:32],
            category=verdict.category[:32],
            action=verdict.action,
            matched=verdict.matched[:200],
        )
    )


async def check_text(
    session: AsyncSession,
    redis: RedisClient,
    *,
    user_id: int | None,
    source: str,
    text: str,
    raise_on_reject: bool = True,
) -> Verdict:
    """Run the content filter on ``text`` (``source`` names the field: ``bio``, ...).

    Call before modifying anything in ``session``: a warn or reject is logged and committed
    here (so the log survives the refusal), a reject costs ``user_id`` trust (none without an
    account yet) and raises :class:`ContentRejected` unless ``raise_on_reject`` is False.
    """
    matcher = await get_matcher(session, redis)
    verdict = matcher.check(text)
    if verdict.action == "allow":
        return verdict
    write_log(session, user_id=user_id, source=source, verdict=verdict)
    if verdict.action == "reject" and user_id is not None:
        await apply_trust(session, user_id=user_id, reason="content_rejected")
    await session.commit()
    if verdict.action == "reject" and raise_on_reject:
        raise ContentRejected(
            f"the {source} was refused by the content filter ({verdict.category})"
        )
    return verdict


async def check_texts(
    session: AsyncSession,
    redis: RedisClient,
    *,
    user_id: int | None,
    texts: Mapping[str, str | None],
) -> dict[str, Verdict]:
    """:func:`check_text` for several fields (``{"bio": ..., "display_name": ...}``); every
    field is checked and logged before the first reject is raised. ``None`` fields are skipped."""
    verdicts = {
        source: await check_text(
            session, redis, user_id=user_id, source=source, text=text, raise_on_reject=False
        )
        for source, text in texts.items()
        if text is not None
    }
    for source, verdict in verdicts.items():
        if verdict.action == "reject":
            raise ContentRejected(
                f"the {source} was refused by the content filter ({verdict.category})"
            )
    return verdicts

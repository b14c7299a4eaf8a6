"""Every Redis key name the project builds, the token-version cache, and the two reply shapes
every reader needs (a key or id as text, the entries of an XREAD reply).

**Hash tags.** Redis Cluster refuses a Lua script, a MULTI transaction or a multi-key command
whose keys fall in different hash slots, and a key's slot is the CRC16 of its ``{tag}`` when it
has one. So the tags are chosen by what must be touched together:

- ``{u<n>}``, ``n = user id % USER_SLOTS``: every key of one user (routes, shown, seen, grace,
  token version, daily send counter). The offline script reads and writes four of them at once.
  A user's keys never need another user's, but the broker looks up the routes of a whole tick's
  recipients: grouped by tag, that is at most ``USER_SLOTS`` single-slot script calls in one
  round trip, whatever the number of recipients (a larger ``USER_SLOTS`` spreads users over more
  cluster shards and makes more calls per tick). ``USER_SLOTS`` follows the deployment, decided
  once from the settings every process reads (``Settings.user_slots``): 1 on one Redis, where
  every user key carries ``{u0}`` and the routes lookup is one script call a tick (16 tags cost
  the node +26 µs per message at a paced 3,000 msg/s, 121.7 → 147.7, BENCHMARKS.md, *The routes
  lookup per hash slot*), and 16 on a Redis Cluster (``redis+cluster://``), so users spread
  over up to 16 shards; ``MM_REDIS_USER_SLOTS`` overrides both. Changing it renames every user
  key, so every process of a deployment must run with the same value (they do when they share
  ``MM_REDIS_URL``).
- ``{node:<id>}``: one node's delivery stream and the users it hosts (one script call per
  other node's stream).
- ``{nodes}``: the node registry, ``mm:{nodes}`` and each heartbeat: written in one MULTI and
  read with one MGET.

Every other key is touched alone. ``tests/common/test_rediskeys.py`` checks the tags; the
integration test ``tests/realtime/test_slots.py`` records every script, transaction and
multi-key command a real run sends and checks each touches one slot.

The API writes a user's current token version here whenever it bumps it (password change,
reset, logout everywhere, ban), before publishing ``TokenBump`` on the safety stream; a realtime
node compares a token's ``ver`` claim with it at authentication. A missing key means "ask
PostgreSQL" (the reader fills it in).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any, Final

from redis.asyncio import RedisCluster

from common.redisclient import RedisClient
from common.redisedge import packed_by_node
from common.settings import get_settings

PREFIX: Final = "mm:"
TOKEN_VERSION_TTL_S: Final = 7 * 24 * 3600
#: How many hash tags the users' keys are spread over (see the module docstring): read once,
#: at import, from this process's settings.
USER_SLOTS: int = get_settings().user_slots
#: Sorted set: node id -> last heartbeat (epoch seconds).
NODES: Final = "mm:{nodes}"
#: The safety events stream (:mod:`common.events`).
SAFETY_STREAM: Final = "mm:events:safety"
#: A random token that changes with the moderation word list (:mod:`common.moderation`).
MODERATION_VERSION: Final = "mm:moderation:version"
#: Prefix of the API's fixed-window rate-limit counters (:mod:`api.services.ratelimit`).
RATE_LIMIT_PREFIX: Final = "mm:rl:"


def user_group(user_id: int) -> int:
    """Which of the :data:`USER_SLOTS` tags ``user_id``'s keys carry."""
    return user_id % USER_SLOTS


def user_tag(user_id: int) -> str:
    """The hash tag of every key of ``user_id``."""
    return f"{{u{user_group(user_id)}}}"


def by_user_group(users: Iterable[int]) -> list[list[int]]:
    """``users`` split by the tag their keys carry, each part in the order given: one
    single-slot command or script call per part."""
    groups: dict[int, list[int]] = {}
    for user in users:
        groups.setdefault(user_group(user), []).append(user)
    return list(groups.values())


def _user(user_id: int, what: str) -> str:
    return f"mm:{user_tag(user_id)}:user:{user_id}:{what}"


def route_key(user_id: int) -> str:
    """Sorted set of node ids hosting ``user_id``'s sockets, scored by when written (epoch s);
    no expiry: alive as long as the node's lease (:mod:`realtime.leases`)."""
    return _user(user_id, "routes")


def shown_key(user_id: int) -> str:
    """Peers were told ``user_id`` is online (:mod:`realtime.presence`)."""
    return _user(user_id, "shown")


def seen_key(user_id: int) -> str:
    """``user_id``'s last-seen minute, in ms."""
    return _user(user_id, "seen")


def grace_key(user_id: int) -> str:
    """``user_id``'s last socket closed less than the presence grace ago."""
    return _user(user_id, "grace")


def token_version_key(user_id: int) -> str:
    return _user(user_id, "tv")


def daily_counter_key(user_id: int, day: dt.date) -> str:
    """Counter of a capped user's sends on one UTC day (expire it after a day or two)."""
    return _user(user_id, f"sends:{day.isoformat()}")


def node_key(node_id: str) -> str:
    """One realtime node's heartbeat (see :mod:`common.cluster`), in the registry's slot."""
    return f"mm:{{nodes}}:node:{node_id}"


def delivery_stream(node_id: str) -> str:
    """The stream a realtime node reads its deliveries from."""
    return f"mm:{{node:{node_id}}}:deliveries"


def node_users_key(node_id: str) -> str:
    """The users a node hosts or holds in grace (:mod:`realtime.presence`)."""
    return f"mm:{{node:{node_id}}}:users"


def trust_window_key(reason: str, actor: int, target: int) -> str:
    """Set NX while ``actor``'s ``reason`` act on ``target`` has moved the trust score."""
    return f"mm:trust:{reason}:{actor}:{target}"


def known_addresses_key(account: str) -> str:
    """Set of (hashed) addresses that have logged in to this (hashed) account before."""
    return f"mm:login:known:{account}"


def key_tag(key: str) -> str:
    """What Redis Cluster hashes for ``key``: its first non-empty ``{tag}``, else all of it."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


async def set_token_version(redis: RedisClient, user_id: int, version: int) -> None:
    await redis.set(token_version_key(user_id), version, ex=TOKEN_VERSION_TTL_S)


async def get_token_version(redis: RedisClient, user_id: int) -> int | None:
    value = await redis.get(token_version_key(user_id))
    return None if value is None else int(value)


async def get_token_versions(redis: RedisClient, user_ids: list[int]) -> dict[int, int | None]:
    """Several users' cached versions (None where Redis holds none): one MGET per users' hash
    tag, the MGETs in one round trip (one per node on a cluster, concurrently), so each
    multi-key command stays in one slot."""
    groups = by_user_group(user_ids)
    keys = [[token_version_key(user) for user in members] for members in groups]
    if isinstance(redis, RedisCluster):  # a cluster pipeline refuses MGET: one write per node
        replies = await packed_by_node(redis, [("MGET", *k) for k in keys], [k[0] for k in keys])
        if error := next((r for r in replies if isinstance(r, Exception)), None):
            raise error
    else:
        async with redis.pipeline(transaction=False) as pipe:
            for group_keys in keys:
                pipe.mget(group_keys)
            replies = await pipe.execute()
    return {
        user: None if value is None else int(value)
        for members, values in zip(groups, replies, strict=True)
        for user, value in zip(members, values, strict=True)
    }


def as_text(value: object) -> str:
    """A key, member or stream id from a Redis reply as ``str`` (bytes unless decoding is on)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def stream_entries(reply: Any) -> Iterator[tuple[str, dict[bytes, bytes]]]:
    """The ``(id, fields)`` entries of an XREAD reply, whichever RESP version shaped it."""
    streams = reply.items() if isinstance(reply, dict) else (reply or [])
    for _name, entries in streams:
        for entry_id, fields in entries:
            yield as_text(entry_id), fields

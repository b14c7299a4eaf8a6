"""The load generator's population: users, conversation pairs and tokens, made in PostgreSQL.

Owns creating load-test users (``load-<run>-<n>@example.test``, a placeholder password hash:
they never log in through the API), one open conversation per pair with both members, and
minting access tokens with :func:`common.tokens.issue_token` from the development key set of
the target's settings (the same folder the node reads). Rows are inserted in a few statements
(``unnest``) so that 25,000 users take seconds. It also reads back what was stored for the
end-of-run check. It must not talk to a realtime node or the API.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Final

import asyncpg

from common.settings import Settings
from common.tokens import issue_token, keyset_from_settings

#: Tokens live long enough for any bounded run (the node sends ``reauth`` otherwise).
TOKEN_TTL_S: Final = 3600


@dataclass(frozen=True, slots=True)
class Pair:
    """Two users and their conversation."""

    cid: int
    a: int
    b: int


@dataclass(frozen=True, slots=True)
class StoredRow:
    sender: int
    cmid: str
    cid: int
    seq: int


async def create_users(con: asyncpg.Connection, count: int, *, tag: str) -> list[int]:
    emails = [f"load-{tag}-{i}@example.test" for i in range(count)]
    rows = await con.fetch(
        "INSERT INTO users (email, password_hash) SELECT e, 'load-test' FROM unnest($1::text[]) e"
        " RETURNING id",
        emails,
    )
    return [int(r[0]) for r in rows]


async def create_pairs(dsn: str, count: int) -> list[Pair]:
    """``count`` fresh pairs, each with one open conversation of its two members."""
    tag = secrets.token_hex(4)
    con = await asyncpg.connect(dsn)
    try:
        async with con.transaction():
            users = await create_users(con, 2 * count, tag=tag)
            cids = [
                int(r[0])
                for r in await con.fetch(
                    "INSERT INTO conversations SELECT FROM generate_series(1, $1) RETURNING id",
                    count,
                )
            ]
            pairs = [Pair(cid, users[2 * i], users[2 * i + 1]) for i, cid in enumerate(cids)]
            await con.execute(
                "INSERT INTO conversation_members (conversation_id, user_id)"
                " SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                [p.cid for p in pairs for _ in (0, 1)],
                [u for p in pairs for u in (p.a, p.b)],
            )
    finally:
        await con.close()
    return pairs


async def create_lone_users(dsn: str, count: int) -> list[int]:
    """``count`` users with no conversation (for idle connections)."""
    con = await asyncpg.connect(dsn)
    try:
        async with con.transaction():
            return await create_users(con, count, tag=secrets.token_hex(4))
    finally:
        await con.close()


def mint_tokens(settings: Settings, users: list[int]) -> dict[int, str]:
    """An access token per user, signed like the API signs them (token version 0)."""
    keys = keyset_from_settings(settings, with_private=True)
    return {
        user: issue_token(
            keys,
            user_id=user,
            token_version=0,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            ttl_s=TOKEN_TTL_S,
        )
        for user in users
    }


async def stored_messages(dsn: str, cids: list[int]) -> list[StoredRow]:
    """Every message of the given conversations (the end-of-run check reads them)."""
    con = await asyncpg.connect(dsn)
    try:
        rows = await con.fetch(
            "SELECT sender_id, cmid, conversation_id, seq FROM messages"
            " WHERE conversation_id = ANY($1::bigint[])",
            cids,
        )
    finally:
        await con.close()
    return [StoredRow(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]

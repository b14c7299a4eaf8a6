"""Realtime keeps its own SQL and stays free of FastAPI and the ORM."""

from __future__ import annotations

import subprocess
import sys

import asyncpg

from common import models
from realtime import batch, notices, store
from tests.support import ROOT, TICK


def test_realtime_server_imports_neither_fastapi_nor_sqlalchemy() -> None:
    probe = (
        "import sys, realtime.server, realtime.__main__; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'fastapi', 'sqlalchemy', 'starlette', 'api'} or m == 'common.models'); "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200 * TICK,
        check=True,
    )
    assert result.stdout.strip() == ""


def test_every_column_the_realtime_sql_uses_exists_in_the_models() -> None:
    tables = models.Base.metadata.tables
    for declared, statements in (
        (store.COLUMNS, store.STATEMENTS + batch.STATEMENTS),
        (notices.COLUMNS, notices.STATEMENTS),
    ):
        for table, columns in declared.items():
            assert table in tables, table
            assert columns <= set(tables[table].columns.keys()), (table, columns)
        # Every column name in the SQL text is one of the declared ones (or an alias of ours).
        sql = " ".join(statements)
        for table, columns in declared.items():
            for column in set(tables[table].columns.keys()) - columns:
                assert f".{column} " not in sql, (table, column)


async def test_every_statement_prepares_against_the_migrated_schema(
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    async with db.acquire() as con:
        for statement in store.STATEMENTS + batch.STATEMENTS + notices.STATEMENTS:
            await con.prepare(statement)


def test_the_protocol_document_lists_every_code_and_frame() -> None:
    from common import wire
    from common.codes import Close, Err

    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    for close in Close:
        assert f"| {int(close)} | `{close.name}` |" in text, close
    for err in Err:
        assert f"| `{err.value}` |" in text, err
    for frame in (*wire.ClientFrame.__args__, *wire.ServerFrame.__args__):
        tag = frame.__struct_config__.tag
        assert f"| `{tag}` |" in text, tag

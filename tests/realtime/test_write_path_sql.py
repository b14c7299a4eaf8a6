"""The write path's SQL named, not numbered: one table of statuses, one function definition.

``mm_commit_batch`` (:data:`realtime.batch.COMMIT_FUNCTION`) is defined by a migration; the node
reads its outcome codes as :class:`realtime.domain.BatchStatus`. These check that the codes are
the newest defining migration's ``STATUSES`` (no service needed), and that the database the
suite built holds exactly that migration's function body. The in-batch planning the function
relies on (grouped by conversation, repeats settled by the node) is pure and tested here too.
"""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import asyncpg
import pytest
from alembic.script import ScriptDirectory

from common.codes import Err
from realtime.batch import COMMIT_FUNCTION, plan_sends, repeat_outcome
from realtime.domain import BatchStatus, SendOutcome, SendRequest, Stored
from tests.db_support import alembic_config


def newest_function_migration() -> ModuleType:
    """The newest migration (walking down from head) whose ``CREATE`` defines the function."""
    scripts = ScriptDirectory.from_config(alembic_config())
    for revision in scripts.walk_revisions():
        spec = importlib.util.spec_from_file_location(f"_mm_{revision.revision}", revision.path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if f"FUNCTION {COMMIT_FUNCTION}(" in getattr(module, "CREATE", ""):
            return module
    raise AssertionError(f"no migration defines {COMMIT_FUNCTION}")


def test_batch_statuses_are_the_newest_migrations_table() -> None:
    migration = newest_function_migration()
    assert {status.name: status.value for status in BatchStatus} == migration.STATUSES


@pytest.mark.usefixtures("db")
async def test_the_database_holds_the_newest_migrations_function(
    db: asyncpg.Pool[asyncpg.Record],
) -> None:
    create: str = newest_function_migration().CREATE
    match = re.search(r"\$fn\$(.*)\$fn\$", create, re.DOTALL)
    assert match is not None, "the CREATE quotes its body with $fn$"
    source = await db.fetchval("SELECT prosrc FROM pg_proc WHERE proname = $1", COMMIT_FUNCTION)
    assert source == match.group(1)


def _send(sender: int, cid: int, cmid: str, body: str = "x") -> SendRequest:
    return SendRequest(sender, cid, cmid, body, "text", None, ())


def test_plan_groups_by_conversation_in_arrival_order_and_sets_repeats_aside() -> None:
    sends = [
        _send(1, 20, "a"),
        _send(2, 10, "b"),
        _send(1, 20, "c"),
        _send(1, 20, "a"),  # a repeat of 0
        _send(2, 10, "d"),
        _send(3, 30, "a"),  # another sender's "a": not a repeat
        _send(1, 10, "a"),  # the same sender's "a" in another conversation: a new message
    ]
    plan = plan_sends(sends)
    assert plan.order == [1, 4, 6, 0, 2, 5]
    assert plan.repeats == {3: 0}


class _Nobody:
    def send_finished(self, outcome: SendOutcome) -> None:
        pass

    def read_finished(self, outcome: object) -> None:
        pass


def test_a_repeat_answers_as_its_first_or_as_a_conflict() -> None:
    reply = _Nobody()
    first = _send(1, 10, "k", "hello")
    stored = SendOutcome(first, reply, Stored(7, 3, 1000))
    same = repeat_outcome(_send(1, 10, "k", "hello"), reply, first, stored)
    assert same.stored == Stored(7, 3, 1000, dup=True) and same.error is None
    other_body = repeat_outcome(_send(1, 10, "k", "bye"), reply, first, stored)
    assert (other_body.stored, other_body.error) == (None, Err.CMID_CONFLICT)
    other_kind = repeat_outcome(
        SendRequest(1, 10, "k", "hello", "image", None, ()), reply, first, stored
    )
    assert other_kind.error == Err.CMID_CONFLICT
    refused = SendOutcome(first, reply, error=Err.NOT_MEMBER)
    assert repeat_outcome(_send(1, 10, "k", "hello"), reply, first, refused).error == Err.NOT_MEMBER

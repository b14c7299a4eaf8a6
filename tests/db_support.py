"""Where the test database and Redis are, and how the test database is built.

``MM_TEST_DATABASE`` (default ``mergemeet_test``) and ``MM_TEST_REDIS_DB`` (default 1) name the
suite's own database and Redis database on the servers of ``MM_DATABASE_URL`` and
``MM_REDIS_URL``, so several suites can run side by side. Importing this module connects to
nothing: ``tests/conftest.py`` builds the database only when a test that needs it runs.
"""

from __future__ import annotations

import os

from alembic.config import Config
from sqlalchemy import bindparam, select
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.sql import ClauseElement

from common.models import Conversation, ConversationMember
from common.redisclient import is_cluster_url

# The benchmark prepares its database the same way: one implementation for both.
from loadtest.stack import recreate_database
from loadtest.stack import with_db_path as with_path
from tests.support import ROOT

__all__ = [
    "MEMBER_STATE_SQL",
    "TEST_DB",
    "TEST_DB_URL",
    "TEST_REDIS_DB",
    "TEST_REDIS_URL",
    "TOP_SEQ_SQL",
    "alembic_config",
    "recreate_database",
    "with_path",
]

_BASE_DB_URL = os.environ.get(
    "MM_DATABASE_URL", "postgresql+asyncpg://mergemeet@127.0.0.1:55432/mergemeet"
)
_BASE_REDIS_URL = os.environ.get("MM_REDIS_URL", "redis://127.0.0.1:56379/0")
TEST_DB = os.environ.get("MM_TEST_DATABASE", "mergemeet_test")
TEST_REDIS_DB = int(os.environ.get("MM_TEST_REDIS_DB", "1"))
TEST_DB_URL = with_path(_BASE_DB_URL, f"/{TEST_DB}")
# A Redis Cluster has only database 0: the cluster run keeps its URL as it is.
TEST_REDIS_URL = (
    _BASE_REDIS_URL
    if is_cluster_url(_BASE_REDIS_URL)
    else with_path(_BASE_REDIS_URL, f"/{TEST_REDIS_DB}")
)


def _asyncpg_sql(statement: ClauseElement) -> str:
    """``statement`` as asyncpg SQL (``$1``, ``$2`` in the order its bind parameters appear)."""
    return str(statement.compile(dialect=asyncpg_dialect()))  # type: ignore[no-untyped-call]


#: ``(last_read_seq, unread_count)`` of member ``$2`` of conversation ``$1``, and a
#: conversation's top ``seq``: the API's own derived expressions (common.models), for tests
#: that read the database with asyncpg.
MEMBER_STATE_SQL = _asyncpg_sql(
    select(ConversationMember.last_read_seq, ConversationMember.unread_count).where(
        ConversationMember.conversation_id == bindparam("cid"),
        ConversationMember.user_id == bindparam("user"),
    )
)
TOP_SEQ_SQL = _asyncpg_sql(select(Conversation.last_seq).where(Conversation.id == bindparam("cid")))


def alembic_config(database_url: str = TEST_DB_URL) -> Config:
    """The project's alembic configuration, pointed at ``database_url``."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["database_url"] = database_url
    return config

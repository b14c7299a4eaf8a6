"""The Redis Cluster run: ``make test`` runs ``pytest -m cluster`` a second time with
``MM_REDIS_URL`` on the local cluster (``python -m common.devservices start-cluster``).

``cluster`` marks two kinds of tests: this folder's, which need a cluster (they kill its
masters and look at its shards) and are deselected when ``MM_REDIS_URL`` names one Redis; and
existing tests of the Redis edge that run in both runs, listed in :data:`ALSO_ON_A_CLUSTER`
(cross-node chat and sync, presence across nodes and after a node kill, safety events from
the real API, token revocation, the rate limiter, the seams' Redis edge). Everything else is
unchanged: the nodes, the API and the test client come from the usual fixtures, pointed at the
cluster by the environment they inherit.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from common.redisclient import is_cluster_url
from tests.db_support import TEST_REDIS_URL

# The realtime fixtures (two nodes, the test database's pool, users, conversations).
from tests.realtime.conftest import db, new_conversation, new_user, nodes

__all__ = ["db", "new_conversation", "new_user", "nodes"]

HERE = Path(__file__).resolve().parent
#: Existing tests (node id prefixes) that also run against the cluster.
ALSO_ON_A_CLUSTER = (
    "tests/realtime/test_chat.py::test_two_users_on_two_nodes_chat_both_ways",
    "tests/realtime/test_chat.py::test_offline_client_gets_exactly_what_it_missed",
    "tests/realtime/test_presence.py::test_online_then_offline_only_after_the_grace",
    "tests/realtime/test_presence.py::test_a_killed_nodes_users_go_offline_within_one_ttl",
    "tests/realtime/test_safety.py::test_an_admin_ban_closes_the_users_sockets_on_both_nodes",
    "tests/realtime/test_safety.py::test_logout_everywhere_closes_sockets_with_older_tokens",
    "tests/realtime/test_safety.py::test_a_block_through_the_api_cuts_messages",
    "tests/realtime/test_auth.py::test_postgresql_is_the_truth_over_a_stale_redis_copy",
    "tests/api/test_auth_throttling.py",
    "tests/common/test_cluster.py",
    "tests/common/test_events.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    on_cluster = is_cluster_url(TEST_REDIS_URL)
    found: set[str] = set()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        here = HERE in Path(str(item.fspath)).resolve().parents
        listed = next((p for p in ALSO_ON_A_CLUSTER if item.nodeid.startswith(p)), None)
        if here or listed:
            item.add_marker(pytest.mark.cluster)
        if listed:
            found.add(listed)
        (dropped if here and not on_cluster else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
    # The whole suite collected (no paths given): a renamed test must not leave the set unseen.
    if not config.option.file_or_dir and (missing := set(ALSO_ON_A_CLUSTER) - found):
        raise pytest.UsageError(f"ALSO_ON_A_CLUSTER names tests that do not exist: {missing}")

"""Which PostgreSQL processes a bench run counts, and CPU per message from a run's shares."""

from __future__ import annotations

import os

from loadtest.bench import us_per_message
from loadtest.processes import cpu_seconds, serves, used


def test_only_the_bench_databases_backends_and_the_clusters_background_count() -> None:
    db = "mergemeet_bench"
    assert serves("postgres: mergemeet mergemeet_bench 127.0.0.1(40122) idle", db)
    assert serves("postgres: mergemeet mergemeet_bench [local] SELECT", db)
    assert not serves("postgres: mergemeet mm_test_main 127.0.0.1(36878) idle in transaction", db)
    assert serves("postgres: autovacuum worker mergemeet_bench", db)
    assert not serves("postgres: autovacuum worker mm_test_main", db)
    for background in ("walwriter", "checkpointer", "background writer", "autovacuum launcher"):
        assert serves(f"postgres: {background}", db), background


def test_cpu_between_samples_counts_new_processes_from_zero() -> None:
    assert used({1: 2.0, 2: 5.0}, {1: 2.5, 2: 5.25, 3: 0.5}) == 1.25
    assert cpu_seconds(os.getpid()) > 0


def test_us_per_message_divides_each_share_by_the_delivered_rate() -> None:
    row = {
        "delivered_per_s": 5000.0,
        "server_cpu": [0.4, 0.1],
        "services_cpu": {"postgres": 0.25, "redis": 0.02},
    }
    assert us_per_message(row) == {"node": 100.0, "postgres": 50.0, "redis": 4.0}

"""PostgreSQL stopped for ~10 s and paused with SIGSTOP, under load (P1, P2, P6).

While the database is away, sends must be refused with the retryable ``db_unavailable`` (or
stay unanswered: unknown), never acked; sockets stay open; when it is back the node serves again
by itself and the clients' resends (same ``cmid``) settle every outcome.
"""

from __future__ import annotations

import asyncpg

from common.codes import Err
from tests.faults.conftest import Cluster, World
from tests.faults.outages import assert_outage_settled, report_outage, run_outage
from tests.faults.services import PrivateServices


async def test_postgresql_stopped_refuses_retryably_and_resumes_by_itself(
    cluster: Cluster,
    world: World,
    private: PrivateServices,
    pdb: asyncpg.Pool[asyncpg.Record],
) -> None:
    verdict, history, figures = await run_outage(
        cluster,
        world,
        pdb,
        seed=21,
        break_it=lambda: private.stop_postgres("fast"),
        mend_it=private.start_postgres,
    )
    report_outage("postgres[stopped 10s]", verdict, history, **figures)
    assert_outage_settled(verdict, history, figures)


async def test_postgresql_paused_with_sigstop_never_acks_falsely_and_resumes(
    cluster: Cluster,
    world: World,
    private: PrivateServices,
    pdb: asyncpg.Pool[asyncpg.Record],
) -> None:
    verdict, history, figures = await run_outage(
        cluster,
        world,
        pdb,
        seed=22,
        break_it=private.pause_postgres,
        mend_it=private.resume_postgres,
    )
    report_outage("postgres[SIGSTOP 10s]", verdict, history, **figures)
    # A paused server refuses nothing by itself: sends time out (unknown) or are refused.
    assert_outage_settled(verdict, history, figures, refused=False)
    refused = history.attempts[f"fail:{Err.DB_UNAVAILABLE}"]
    assert refused + history.attempts["unknown"] > 0, verdict.summary()

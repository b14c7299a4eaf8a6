"""PostgreSQL stopped for ~10 s and paused with SIGSTOP, under load (P1, P2, P6).

While the database is away, sends must be refused with the retryable ``db_unavailable`` (or
stay unanswered: unknown), never acked; sockets stay open; when it is back the node serves again
by itself and the clients' resends (same ``cmid``) settle every outcome.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from common.codes import Err
from tests.faults.conftest import Cluster, World
from tests.faults.harness import History, Verdict, check
from tests.faults.results import record
from tests.faults.services import PrivateServices
from tests.support import TICK

OUTAGE = 200 * TICK  # ~10 s
REFUSED = f"fail:{Err.DB_UNAVAILABLE}"


def _refused_but_stored(history: History) -> list[str]:
    """Ops refused as "nothing stored" before a ``dup`` ack: that refusal was false."""
    found = []
    for op in history.ops.values():
        if op.ack is not None and op.ack.get("dup") and op.outcomes[0] == REFUSED:
            first_ok = op.outcomes.index("ok")
            if all(o == REFUSED for o in op.outcomes[:first_ok]):
                found.append(op.cmid)
    return found


def _report(name: str, verdict: Verdict, history: History, **figures: object) -> None:
    record(
        name,
        summary=verdict.summary(),
        refused_but_stored=_refused_but_stored(history),
        closes=dict(history.closes),
        **figures,
    )


async def _run_outage(
    cluster: Cluster,
    world: World,
    pdb: asyncpg.Pool[asyncpg.Record],
    *,
    seed: int,
    break_it: object,
    mend_it: object,
    outage: float = OUTAGE,
) -> tuple[Verdict, History, dict[str, float]]:
    assert callable(break_it) and callable(mend_it)
    a, b = cluster.node("a"), cluster.node("b")
    urls = [cluster.url(a), cluster.url(b)]
    assert a.proc is not None and b.proc is not None
    pids = (a.proc.pid, b.proc.pid)
    workload, peers, history = await world.workload(urls, seed=seed, interval=TICK, burst=2)
    workload.start()
    try:
        await workload.wait_connected()
        await asyncio.sleep(20 * TICK)
        break_it()
        # pg_ctl returns once the server is gone (SIGSTOP at once): commits answered before that
        # are real acks, and their frames may take a moment to reach a client on a busy box.
        down_at = time.monotonic()
        await asyncio.sleep(outage)
        acks_in_outage = sum(down_at + 10 * TICK < t for t in history.ack_times)
        mend_at = time.monotonic()
        await asyncio.to_thread(mend_it)  # pg_ctl start -w: includes crash recovery, if any
        back_at = time.monotonic()
        first = await workload.acks_since(back_at, 20)
        await asyncio.sleep(10 * TICK)
        await workload.settle()
    finally:
        await workload.close()
    assert a.proc is not None and b.proc is not None
    assert a.proc.poll() is None and b.proc.poll() is None, "a node died with PostgreSQL"
    assert (a.proc.pid, b.proc.pid) == pids, "a node was restarted"
    verdict = await check(pdb, history, peers)
    figures = {
        "outage_s": round(back_at - down_at, 2),
        "acks_during_outage": acks_in_outage,
        "postgres_start_s": round(back_at - mend_at, 2),
        "first_ack_after_return_s": round(first - back_at, 2),
        "recovered_after_restart_began_s": round(first - mend_at, 2),
    }
    return verdict, history, figures


async def test_postgresql_stopped_refuses_retryably_and_resumes_by_itself(
    cluster: Cluster,
    world: World,
    private: PrivateServices,
    pdb: asyncpg.Pool[asyncpg.Record],
) -> None:
    verdict, history, figures = await _run_outage(
        cluster,
        world,
        pdb,
        seed=21,
        break_it=lambda: private.stop_postgres("fast"),
        mend_it=private.start_postgres,
    )
    _report("postgres[stopped 10s]", verdict, history, **figures)
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    assert verdict.acked == verdict.attempted == verdict.stored
    # Sends were refused with the retryable code while it was down, and nothing was acked.
    assert history.attempts[f"fail:{Err.DB_UNAVAILABLE}"] > 0, verdict.summary()
    assert figures["acks_during_outage"] == 0
    assert not _refused_but_stored(history)


async def test_postgresql_paused_with_sigstop_never_acks_falsely_and_resumes(
    cluster: Cluster,
    world: World,
    private: PrivateServices,
    pdb: asyncpg.Pool[asyncpg.Record],
) -> None:
    verdict, history, figures = await _run_outage(
        cluster,
        world,
        pdb,
        seed=22,
        break_it=private.pause_postgres,
        mend_it=private.resume_postgres,
    )
    _report("postgres[SIGSTOP 10s]", verdict, history, **figures)
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    assert verdict.acked == verdict.attempted == verdict.stored
    assert figures["acks_during_outage"] == 0
    refused = history.attempts[f"fail:{Err.DB_UNAVAILABLE}"]
    assert refused + history.attempts["unknown"] > 0, verdict.summary()

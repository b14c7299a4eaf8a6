"""One PostgreSQL outage under load, and what every outage must leave behind.

Shared by ``test_postgres.py`` (10 s stop, SIGSTOP) and ``test_postgres_restart.py`` (30 s stop
and restart): two nodes under steady sends, the database broken and mended by the caller's
functions, then the history checked against the database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import asyncpg

from common.codes import RETRYABLE, Err
from tests.faults.conftest import Cluster, World
from tests.faults.harness import History, Verdict, check
from tests.faults.results import record
from tests.support import TICK

OUTAGE = 200 * TICK  # ~10 s
REFUSED = f"fail:{Err.DB_UNAVAILABLE}"


def refused_but_stored(history: History) -> list[str]:
    """Ops refused as "nothing stored" before a ``dup`` ack: that refusal was false."""
    found = []
    for op in history.ops.values():
        if op.ack is not None and op.ack.get("dup") and op.outcomes[0] == REFUSED:
            first_ok = op.outcomes.index("ok")
            if all(o == REFUSED for o in op.outcomes[:first_ok]):
                found.append(op.cmid)
    return found


def assert_outage_settled(
    verdict: Verdict, history: History, figures: dict[str, float], *, refused: bool = True
) -> None:
    """What every PostgreSQL outage must leave behind, whatever broke it.

    Every send settled by resends (acked, stored once, none lost), nothing acked while the
    database was away (no false ack), no "nothing stored" refusal of a message that was stored.
    With ``refused`` (a server that is gone, not paused), sends were refused while it was down
    and every refusal was retryable.
    """
    assert not verdict.problems, f"{verdict.problems} ({verdict.summary()})"
    assert verdict.acked == verdict.attempted == verdict.stored
    assert figures["acks_during_outage"] == 0
    assert not refused_but_stored(history)
    if refused:
        assert history.attempts[REFUSED] > 0, verdict.summary()
        refusals = {
            key.removeprefix("fail:") for key in history.attempts if key.startswith("fail:")
        }
        assert refusals <= set(RETRYABLE), refusals


def report_outage(name: str, verdict: Verdict, history: History, **figures: object) -> None:
    record(
        name,
        summary=verdict.summary(),
        refused_but_stored=refused_but_stored(history),
        closes=dict(history.closes),
        **figures,
    )


async def run_outage(
    cluster: Cluster,
    world: World,
    pdb: asyncpg.Pool[asyncpg.Record],
    *,
    seed: int,
    break_it: Callable[[], object],
    mend_it: Callable[[], object],
    outage: float = OUTAGE,
) -> tuple[Verdict, History, dict[str, float]]:
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

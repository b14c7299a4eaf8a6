"""PostgreSQL down for 30 s and restarted, with fast and with immediate shutdown, under load.

The ten-second stop of ``test_postgres.py`` said nothing of the outages the reliability plan
names (10-30 s), nor of a crash: ``pg_ctl stop -m immediate`` kills the server without a
checkpoint, so the restart replays the WAL first. Through both, with two nodes under steady
sends: nothing acked is lost (P1), nothing is acked while the database is away (no false ack),
every refusal is retryable (P6: the client resends the same ``cmid``), each ``(sender, cmid)`` is
stored once (P2), and the nodes serve again by themselves, the same processes. The time from the
restart command to the first ack after it is printed and recorded in
``.data/test-logs/fault-results.jsonl`` (docs/RELIABILITY.md).

Two tests of ~40 s each: the longest of the fault suite, kept to these two.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.faults.conftest import Cluster, World
from tests.faults.outages import assert_outage_settled, report_outage, run_outage
from tests.faults.services import PrivateServices

LONG_OUTAGE_S = 30.0  # wall-clock seconds: the plan's figure, not scaled with the test tick


@pytest.mark.parametrize(("mode", "seed"), [("fast", 31), ("immediate", 32)])
async def test_postgresql_down_30s_then_restarted_recovers_by_itself(
    mode: str,
    seed: int,
    cluster: Cluster,
    world: World,
    private: PrivateServices,
    pdb: asyncpg.Pool[asyncpg.Record],
) -> None:
    verdict, history, figures = await run_outage(
        cluster,
        world,
        pdb,
        seed=seed,
        break_it=lambda: private.stop_postgres(mode),
        mend_it=private.start_postgres,
        outage=LONG_OUTAGE_S,
    )
    report_outage(f"postgres[{mode} stop 30s, restart]", verdict, history, **figures)
    print(
        f"\npostgres {mode} stop {figures['outage_s']} s: restart took "
        f"{figures['postgres_start_s']} s, first ack {figures['first_ack_after_return_s']} s "
        f"after it, {figures['recovered_after_restart_began_s']} s after the restart began; "
        f"{verdict.summary()}"
    )
    assert_outage_settled(verdict, history, figures)
    # Self-recovery: serving again within a few seconds of the restart, same node processes.
    assert figures["first_ack_after_return_s"] < 10, figures

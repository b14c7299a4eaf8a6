"""realtime/failpoints.py: the spec grammar, and each action in a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from realtime import failpoints
from tests.support import ROOT, TICK


def test_specs_parse_into_points_and_bad_ones_are_refused() -> None:
    points = failpoints.parse("before_commit=kill@3, after_fanout_before_ack=delay:0.25,")
    assert points["before_commit"].action == "kill" and points["before_commit"].after == 3
    assert points["after_fanout_before_ack"].delay_s == 0.25
    assert failpoints.parse("") == {}
    for bad in ("nowhere=kill", "before_commit=explode", "before_commit=kill@0", "before_commit"):
        with pytest.raises(ValueError):
            failpoints.parse(bad)


def test_nothing_is_armed_without_the_variable() -> None:
    # The test process itself runs without MM_FAILPOINTS: every point is a no-op.
    assert "MM_FAILPOINTS" not in os.environ
    assert failpoints.armed() == {}
    for name in failpoints.POINTS:
        failpoints.hit(name)


def _run(spec: str, hits: int) -> subprocess.CompletedProcess[str]:
    code = (
        "from realtime import failpoints\n"
        f"for i in range({hits}):\n"
        "    failpoints.hit('before_commit')\n"
        "    print(i, flush=True)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        env=os.environ | {"MM_FAILPOINTS": spec},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=200 * TICK,
        check=False,
    )


def test_kill_fires_on_the_nth_hit_as_a_sigkill() -> None:
    done = _run("before_commit=kill@3", hits=5)
    assert done.returncode == -signal.SIGKILL
    assert done.stdout.split() == ["0", "1"]


def test_raise_fires_from_the_nth_hit_on() -> None:
    done = _run("before_commit=raise@2", hits=5)
    assert done.returncode == 1 and "FailpointError: before_commit" in done.stderr
    assert done.stdout.split() == ["0"]

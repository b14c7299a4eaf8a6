"""Where fault tests write what they measured (``.data/test-logs/fault-results.jsonl``).

docs/RELIABILITY.md reports these figures; one JSON object per test run, appended.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from tests.support import ROOT

RESULTS = ROOT / ".data" / "test-logs" / "fault-results.jsonl"


def record(test: str, **figures: Any) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    entry = {"test": test, "at": round(time.time()), "pid": os.getpid()} | figures
    with RESULTS.open("a") as out:
        out.write(json.dumps(entry, default=str) + "\n")

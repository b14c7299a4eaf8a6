"""What a node spends on users who do nothing (issue 18 item 3): ``python -m loadtest.bench
--only idle_cpu [--baseline-src <tree>]``.

A fresh node (pinned to core 1) gets ``connections`` authenticated idle sockets, held while its
CPU time (``/proc/<pid>/stat``) and Redis's are read over a ``window_s`` window after a settle,
in two layouts of the same sockets:

- ``users``: one socket per user, so every socket is a hosted user (routes, presence, lease);
- ``sockets``: 100 sockets per user, so the same sockets carry 1 % of the users: what is left
  is the per-socket cost (WebSocket keepalive pings, every ``MM_HEARTBEAT_S`` = 15 s per
  socket, and their timers) plus the node's fixed loops.

Per hosted user per 10 s: ``users`` CPU / users (everything included), and the per-user part
alone = (``users`` - ``sockets``) / (the difference in users). With ``--baseline-src`` each
layout also runs from that tree, alternated run by run, in the same bench run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any, Final

from loadtest.generator import idle_sockets

#: The two layouts: sockets per user.
LAYOUTS: Final = {"users": 1, "sockets": 100}
PER_S: Final = 10.0  # figures per user per 10 s (one heartbeat period at the default TTL)


async def idle_cpu_run(
    *,
    url: str,
    connections: int,
    per_user: int,
    settle_s: float,
    window_s: float,
    on_window: Callable[[str], None],
) -> dict[str, Any]:
    """Open and hold the sockets; ``on_window`` marks the measured window's ends."""
    idle = await idle_sockets(
        target="mergemeet", urls=[url], connections=connections, per_user=per_user
    )
    started = time.perf_counter()
    await idle.connect()
    open_s = time.perf_counter() - started
    opened = idle.opened()
    await asyncio.sleep(settle_s)
    idle.run.sending = True  # closes from here on are counted
    on_window("start")
    await asyncio.sleep(window_s)
    on_window("end")
    held = idle.held()
    idle.run.sending = False
    idle.close()
    await asyncio.sleep(0.5)
    return {
        "connections": connections,
        "opened": opened,
        "held": held,
        "users": len(idle.users),
        "open_s": round(open_s, 2),
        "window_s": window_s,
        "errors": dict(idle.run.errors),
        "closes": dict(idle.run.closes),
    }


def per_10s_us(share: float, count: int) -> float:
    """A core share over the window, as CPU µs per ``count`` per 10 s."""
    return round(share * PER_S * 1e6 / max(count, 1), 2)


def row_figures(row: dict[str, Any]) -> dict[str, float]:
    node, redis = sum(row["server_cpu"]), row["services_cpu"].get("redis", 0.0)
    return {
        "node_cpu_share": round(node, 4),
        "redis_cpu_share": round(redis, 4),
        "node_us_per_user_10s": per_10s_us(node, row["users"]),
        "node_us_per_socket_10s": per_10s_us(node, row["held"]),
        "redis_us_per_user_10s": per_10s_us(redis, row["users"]),
    }


def figures(runs: dict[str, list[dict[str, Any]]], tree: str) -> dict[str, float]:
    """The medians of one tree's runs (labels ``idle_cpu_<tree>_<layout>``)."""
    users = runs[f"idle_cpu_{tree}_users"]
    sockets = runs[f"idle_cpu_{tree}_sockets"]

    def med(rows: list[dict[str, Any]], key: str) -> float:
        return round(float(statistics.median(r[key] for r in rows)), 3)

    out = {
        f"idle_cpu_{tree}_node_us_per_user_10s": med(users, "node_us_per_user_10s"),
        f"idle_cpu_{tree}_redis_us_per_user_10s": med(users, "redis_us_per_user_10s"),
        f"idle_cpu_{tree}_sockets_layout_node_us_per_socket_10s": med(
            sockets, "node_us_per_socket_10s"
        ),
    }
    # The per-user part alone: the extra CPU of the users layout over the same sockets as
    # fewer users, per extra user.
    pairs = list(zip(users, sockets, strict=True))
    extra_users = statistics.median(u["users"] - s["users"] for u, s in pairs)
    extra_share = statistics.median(u["node_cpu_share"] - s["node_cpu_share"] for u, s in pairs)
    extra_redis = statistics.median(u["redis_cpu_share"] - s["redis_cpu_share"] for u, s in pairs)
    out[f"idle_cpu_{tree}_node_us_per_user_10s_user_part"] = per_10s_us(
        extra_share, int(extra_users)
    )
    out[f"idle_cpu_{tree}_redis_us_per_user_10s_user_part"] = per_10s_us(
        extra_redis, int(extra_users)
    )
    return out

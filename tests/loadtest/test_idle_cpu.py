"""The idle-CPU figures' arithmetic (pure: no services)."""

from __future__ import annotations

from typing import Any

from loadtest import idle_cpu


def row(users: int, held: int, node: float, redis: float) -> dict[str, Any]:
    base: dict[str, Any] = {
        "users": users,
        "held": held,
        "server_cpu": [node],
        "services_cpu": {"redis": redis, "postgres": 0.0},
    }
    return base | idle_cpu.row_figures(base)


def test_a_core_share_becomes_microseconds_per_user_per_10_s() -> None:
    # 1 % of a core for 10,000 users: 0.01 * 10 s = 100 ms per 10 s = 10 us per user.
    assert idle_cpu.per_10s_us(0.01, 10_000) == 10.0
    assert row(10_000, 10_000, 0.01, 0.002)["redis_us_per_user_10s"] == 2.0


def test_the_user_part_is_the_extra_cpu_of_the_users_layout_per_extra_user() -> None:
    runs = {
        "idle_cpu_head_users": [
            row(19_000, 19_000, 0.030, 0.004),
            row(19_000, 19_000, 0.032, 0.004),
        ],
        "idle_cpu_head_sockets": [row(190, 19_000, 0.011, 0.001), row(190, 19_000, 0.013, 0.001)],
    }
    found = idle_cpu.figures(runs, "head")
    # (0.031 - 0.012) * 10 s / 18,810 users = 10.1 us; the whole: 0.031 * 10 / 19,000 = 16.3 us
    # (the median of the two runs' rounded figures).
    assert found["idle_cpu_head_node_us_per_user_10s_user_part"] == 10.1
    assert found["idle_cpu_head_node_us_per_user_10s"] == 16.315
    assert found["idle_cpu_head_sockets_layout_node_us_per_socket_10s"] == 6.315
    assert found["idle_cpu_head_redis_us_per_user_10s_user_part"] == 1.59

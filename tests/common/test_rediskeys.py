"""The hash tags of the key builders: what a script or a transaction takes together shares a
slot, and users are spread over :data:`USER_SLOTS` of them, for the value of one Redis (1) and
of a cluster (16) alike (pure: no Redis)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from common import rediskeys as k
from common.settings import CLUSTER_USER_SLOTS, Settings, get_settings
from realtime.presencebackend import offline_keys


@pytest.fixture(params=[1, CLUSTER_USER_SLOTS], ids=["one-redis", "cluster"])
def user_slots(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """The key builders as a process with that many user tags builds them."""
    monkeypatch.setattr(k, "USER_SLOTS", request.param)
    yield request.param


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_one_users_keys_share_a_slot_and_users_spread_over_user_slots(user_slots: int) -> None:
    for user in (1, 2, 15, 16, 17, 10_000_019):
        keys = [
            *offline_keys(user),
            k.token_version_key(user),
            k.daily_counter_key(user, dt.date(2024, 1, 2)),
        ]
        assert {slot(key) for key in keys} == {slot(k.route_key(user))}
        assert k.key_tag(k.route_key(user)) == f"u{k.user_group(user)}"
    assert len({slot(k.route_key(user)) for user in range(1000)}) == user_slots


def test_grouping_by_tag_keeps_order_and_makes_one_group_per_tag(user_slots: int) -> None:
    users = [5, 21, 3, 37, 16, 0]
    groups = k.by_user_group(users)
    assert sorted(u for g in groups for u in g) == sorted(users)
    assert len(groups) == len({u % user_slots for u in users})
    for group in groups:
        assert len({slot(k.route_key(u)) for u in group}) == 1
        assert group == [u for u in users if u in group]


def test_the_tag_count_follows_the_deployment_in_one_place() -> None:
    """What every process reads at import: 1 on one Redis, 16 on a cluster."""
    single = Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0")
    cluster = Settings(_env_file=None, redis_url="redis+cluster://127.0.0.1:1")
    assert (single.user_slots, cluster.user_slots) == (1, CLUSTER_USER_SLOTS)
    assert get_settings().user_slots == k.USER_SLOTS


def test_a_nodes_keys_and_the_registry_share_their_slots() -> None:
    assert slot(k.delivery_stream("n1")) == slot(k.node_users_key("n1"))
    assert slot(k.delivery_stream("n1")) != slot(k.delivery_stream("n2"))
    assert {slot(k.node_key("n1")), slot(k.node_key("n2"))} == {slot(k.NODES)}


def test_key_tag_follows_redis_cluster() -> None:
    assert k.key_tag("mm:{u3}:user:3:routes") == "u3"
    assert k.key_tag("mm:{}:x") == "mm:{}:x"  # an empty tag hashes the whole key
    assert k.key_tag("plain") == "plain"
    assert slot("mm:{u3}:a") == slot("u3")

"""The hash tags of the key builders: what a script or a transaction takes together shares a
slot, and users are spread over :data:`USER_SLOTS` of them (pure: no Redis)."""

from __future__ import annotations

import datetime as dt

from redis.crc import key_slot

from common import rediskeys as k
from realtime.presencebackend import offline_keys


def slot(key: str) -> int:
    return key_slot(key.encode())


def test_one_users_keys_share_a_slot_and_users_spread_over_user_slots() -> None:
    for user in (1, 2, 15, 16, 17, 10_000_019):
        keys = [
            *offline_keys(user),
            k.token_version_key(user),
            k.daily_counter_key(user, dt.date(2024, 1, 2)),
        ]
        assert {slot(key) for key in keys} == {slot(k.route_key(user))}
        assert k.key_tag(k.route_key(user)) == f"u{k.user_group(user)}"
    assert len({slot(k.route_key(user)) for user in range(1000)}) == k.USER_SLOTS


def test_a_nodes_keys_and_the_registry_share_their_slots() -> None:
    assert slot(k.delivery_stream("n1")) == slot(k.node_users_key("n1"))
    assert slot(k.delivery_stream("n1")) != slot(k.delivery_stream("n2"))
    assert {slot(k.node_key("n1")), slot(k.node_key("n2"))} == {slot(k.NODES)}


def test_key_tag_follows_redis_cluster() -> None:
    assert k.key_tag("mm:{u3}:user:3:routes") == "u3"
    assert k.key_tag("mm:{}:x") == "mm:{}:x"  # an empty tag hashes the whole key
    assert k.key_tag("plain") == "plain"
    assert slot("mm:{u3}:a") == slot("u3")

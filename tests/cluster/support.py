"""The local Redis Cluster's processes, for the tests that break it: which node masters a key,
``kill -9`` of that master by the pid its own pid file names (only a process
:mod:`common.devservices` started), its restart, and waiting for the cluster to heal."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from redis.crc import key_slot

from common import devservices
from common.redisclient import RedisClient
from tests.support import TICK


def _cluster_nodes() -> str:
    """``CLUSTER NODES`` from the first node that answers (a killed one may be any of them)."""
    for port in devservices.cluster_ports():
        with contextlib.suppress(subprocess.CalledProcessError):
            return devservices._redis_cli(port, "cluster", "nodes")
    raise AssertionError("no cluster node answers")


def master_port_of(key: str) -> int:
    """The port of the master serving ``key``'s slot now (asked of the cluster itself)."""
    slot = key_slot(key.encode())
    for line in _cluster_nodes().splitlines():
        fields = line.split()
        if "master" not in fields[2] or "fail" in fields[2]:
            continue
        for span in fields[8:]:
            low, _, high = span.partition("-")
            if low.isdigit() and int(low) <= slot <= int(high or low):
                return int(fields[1].split("@")[0].rsplit(":", 1)[1])
    raise AssertionError(f"no live master serves slot {slot}")


def kill_9(port: int) -> int:
    """SIGKILL the cluster node on ``port``; its pid file and its own INFO must agree."""
    pid = int((devservices.CLUSTER_DIR / str(port) / "redis.pid").read_text().strip())
    info = devservices._redis_cli(port, "info", "server")
    assert f"process_id:{pid}" in info, f"the pid file of {port} does not name its process"
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 100 * TICK
    while devservices._port_open(port) and time.monotonic() < deadline:
        time.sleep(TICK)
    assert not devservices._port_open(port), f"node {port} still answers after SIGKILL"
    return pid


def wait_master_moves(key: str, old: int, timeout: float = 400 * TICK) -> tuple[int, float]:
    """Wait until a replica took over ``key``'s slot from ``old``; (new port, when)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            port = master_port_of(key)
        except AssertionError:
            port = old
        if port != old:
            return port, time.monotonic()
        time.sleep(TICK)
    raise AssertionError(f"no replica took over from {old} within {timeout}s")


def restart(port: int) -> None:
    """Start the killed node again: it rejoins as a replica; wait until all six are ok."""
    devservices.start_cluster_node(port)
    devservices.wait_cluster_ok()


async def node_names(redis: RedisClient, keys: list[str]) -> set[str]:
    """The cluster nodes (host:port) the client routes ``keys`` to."""
    from redis.asyncio import RedisCluster

    assert isinstance(redis, RedisCluster)
    await redis.initialize()
    names = set()
    for key in keys:
        node = redis.get_node_from_key(key)
        assert node is not None
        names.add(node.name)
    return names

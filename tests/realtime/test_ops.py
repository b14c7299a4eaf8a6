"""The ops surface on real nodes: /healthz, /readyz (with a private Redis killed under it),
/metrics moving with real traffic, the ``nodes`` command, and logs free of tokens and bodies."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.realtime.conftest import client, start_node
from tests.support import ROOT, TICK, ServiceProcess, free_port, wait_for_port


@pytest.fixture(scope="module")
def onode(redis: Redis) -> Iterator[ServiceProcess]:
    """One node of its own, logging at INFO so its log lines can be checked."""
    proc = start_node("ops", MM_LOG_LEVEL="INFO")
    try:
        yield proc
    finally:
        assert proc.stop() == 0, f"node did not stop cleanly, see {proc.log_path}"


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the Prometheus text (0 when absent)."""
    label = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
    pattern = re.compile(rf"^{re.escape(name + label)} (\S+)$", re.M)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


async def scrape(port: int) -> str:
    async with httpx.AsyncClient(timeout=40 * TICK) as http:
        response = await http.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_health_and_readiness_answer_on_the_realtime_port(onode: ServiceProcess) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{onode.port}", timeout=2.0) as http:
        assert (await http.get("/healthz")).text == "ok\n"
        ready = await http.get("/readyz")
        assert (ready.status_code, ready.text) == (200, "ready\n")


async def test_metrics_move_with_real_connections_and_sends(
    onode: ServiceProcess,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    url = f"ws://127.0.0.1:{onode.port}/"
    before = await scrape(onode.port)
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    a, b = await client(url, make_token(alice)), await client(url, make_token(bob))
    cmids = []
    for i in range(3):
        cmids.append(await a.send_msg(cid, f"hello {i}"))
        await a.expect("ack", cmid=cmids[-1])
    await a.send(type="typing", cid=cid, on=True)
    await b.expect("typing")
    for _ in range(3):
        await b.expect("msg")
    await a.send(type="send", cid=10**12, cmid="x1", body="nope")
    await a.expect("error", code="not_member")
    during = await scrape(onode.port)

    def grew(name: str, by: float, **labels: str) -> None:
        delta = metric(during, name, **labels) - metric(before, name, **labels)
        assert delta == by, (name, labels, delta)

    grew("mm_rt_sockets_authenticated", 2)
    grew("mm_rt_users_authenticated", 2)
    grew("mm_rt_connections_open", 2)
    grew("mm_rt_frames_in_total", 4, type="send")
    grew("mm_rt_frames_in_total", 1, type="typing")
    grew("mm_rt_frames_out_total", 3, type="ack")
    grew("mm_rt_frames_out_total", 3, type="msg")
    grew("mm_rt_frames_out_total", 1, type="typing")
    grew("mm_rt_errors_total", 1, code="not_member")
    grew("mm_rt_messages_committed_total", 3)
    grew("mm_rt_send_ack_seconds_count", 3)
    assert metric(during, "mm_rt_send_ack_seconds_sum") > metric(
        before, "mm_rt_send_ack_seconds_sum"
    )
    assert metric(during, "mm_rt_batch_size_sum") - metric(before, "mm_rt_batch_size_sum") >= 3
    assert metric(during, "mm_rt_batch_commit_seconds_count") > metric(
        before, "mm_rt_batch_commit_seconds_count"
    )
    # Each authentication read its account and token version through the coalescers.
    for source in ("accounts", "token_versions"):
        assert metric(during, "mm_rt_connect_reads_total", source=source) > metric(
            before, "mm_rt_connect_reads_total", source=source
        )
        read = metric(during, "mm_rt_connect_read_keys_total", source=source) - metric(
            before, "mm_rt_connect_read_keys_total", source=source
        )
        assert read == 2, (source, read)
    # realtime/gcpolicy.py: the full collection before freezing the startup heap was timed.
    assert metric(before, "mm_rt_gc_pause_seconds_count", generation="2") >= 1
    assert metric(before, "mm_rt_gc_pause_seconds_sum", generation="2") > 0
    # A resend reaches the table's resend key: its batch is committed again with the probe.
    await a.send_msg(cid, "hello 0", cmid=cmids[0])
    await a.expect("ack", cmid=cmids[0], dup=True)
    resent = await scrape(onode.port)
    assert (
        metric(resent, "mm_rt_batch_reprobes_total") - metric(during, "mm_rt_batch_reprobes_total")
        == 1
    )
    assert metric(resent, "mm_rt_messages_committed_total") == metric(
        during, "mm_rt_messages_committed_total"
    )
    await a.close()
    await b.close()
    for _ in range(40):
        after = await scrape(onode.port)
        if metric(after, "mm_rt_sockets_authenticated") == metric(
            before, "mm_rt_sockets_authenticated"
        ):
            break
        await asyncio.sleep(TICK)
    assert metric(after, "mm_rt_users_authenticated") == metric(before, "mm_rt_users_authenticated")


async def test_the_nodes_command_lists_live_nodes_and_the_connection_count(
    onode: ServiceProcess,
    new_user: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    c = await client(f"ws://127.0.0.1:{onode.port}/", make_token(await new_user()))
    node_id = f"ops-{onode.port}"
    listed: dict[str, Any] = {}
    for _ in range(60):  # the next heartbeat carries the new count
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "realtime", "nodes", "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=100 * TICK,
            check=True,
        )
        listed = json.loads(result.stdout)
        mine = [n for n in listed["nodes"] if n["id"] == node_id]
        if mine and mine[0]["connections"] >= 1:
            break
        await asyncio.sleep(4 * TICK)
    (info,) = [n for n in listed["nodes"] if n["id"] == node_id]
    assert info["address"] and info["started_at"] > 0 and info["users"] >= 1
    assert listed["connections"] == sum(n["connections"] for n in listed["nodes"]) >= 1
    table = subprocess.run(
        [sys.executable, "-m", "realtime", "nodes"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100 * TICK,
        check=True,
    ).stdout
    assert node_id in table and "live node(s)" in table
    await c.close()


async def test_logs_are_json_with_connection_and_user_and_never_tokens_or_bodies(
    onode: ServiceProcess,
    new_user: Callable[..., Any],
    new_conversation: Callable[..., Any],
    make_token: Callable[..., str],
) -> None:
    alice, bob = await new_user(), await new_user()
    cid = await new_conversation(alice, bob)
    token = make_token(alice)
    a = await client(f"ws://127.0.0.1:{onode.port}/", token)
    secret_body = "do-not-log-this-body-7f3a"
    await a.expect("ack", cmid=await a.send_msg(cid, secret_body))
    await a.close()
    for _ in range(40):
        text = onode.log_path.read_text()
        if f'"user": {alice}' in text:
            break
        await asyncio.sleep(TICK)
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    closed = [e for e in lines if e.get("msg") == "socket closed" and e.get("user") == alice]
    assert closed and closed[0]["conn"] and closed[0]["code"] == 1000
    assert token not in text and token.split(".")[2] not in text and secret_body not in text


async def test_readyz_turns_unready_when_its_redis_dies(redis: Redis) -> None:
    """A private redis-server (never the shared one), killed by its pid under a running node."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mm-redis-") as tmp:
        args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""]
        server = subprocess.Popen(
            ["redis-server", *args, "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        node: ServiceProcess | None = None
        try:
            wait_for_port(port)
            node = start_node(
                "unready",
                MM_REDIS_URL=f"redis://127.0.0.1:{port}/0",
                MM_REALTIME_IO_TIMEOUT_S="0.5",
            )
            base = f"http://127.0.0.1:{node.port}"
            async with httpx.AsyncClient(base_url=base, timeout=100 * TICK) as http:
                assert (await http.get("/readyz")).status_code == 200
                server.send_signal(signal.SIGKILL)
                server.wait(100 * TICK)
                unready = await http.get("/readyz")
                assert unready.status_code == 503 and "redis" in unready.text, unready.text
                assert (await http.get("/healthz")).status_code == 200  # alive all the same
                text = (await http.get("/metrics")).text
                assert metric(text, "mm_rt_redis_errors_total") >= 1
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
            if node is not None:
                node.stop()


async def test_the_grafana_dashboard_only_charts_metrics_a_node_exports(
    onode: ServiceProcess,
) -> None:
    dashboard = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    exported = {
        line.split()[2]
        for line in (await scrape(onode.port)).splitlines()
        if line.startswith("# TYPE")
    }
    suffixes = ("_total", "_bucket", "_sum", "_count")
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            for name in re.findall(r"\bmm_rt_[a-z_]+", target["expr"]):
                base = next((name[: -len(s)] for s in suffixes if name.endswith(s)), name)
                assert base in exported or name in exported, (panel["title"], name)

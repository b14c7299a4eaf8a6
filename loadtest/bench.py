"""``make bench`` / ``python -m loadtest.bench``: every figure of issue 8, with its baseline.

Also issue 20's discovery figure (``--only discovery``, :mod:`loadtest.discovery`): the API
pinned to core 1 on 20,000 seeded profiles, timed over HTTP, and the query's plan.

Owns the benchmark procedure: a fresh database (``mergemeet_bench``) and Redis database on the
project's dev services, the measured servers pinned to core 1 with ``taskset`` (this process,
the load generator, runs pinned to core 0 by the Makefile), each figure measured ``--runs``
times (3 by default) and reported as the median with the baseline of the same run and the ratio
to it, the results JSON under ``.data/bench/`` (not committed) and the plot of throughput and
latency against offered load in ``docs/``. Every run is bounded in messages and seconds; every
server is stopped by its pid. It measures; it never tunes the product's settings beyond lifting
the per-socket rate limit, which a load generator with few sockets would otherwise hit (a real
client sends a few messages a second; the generator's clients send thousands).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

import uvloop

from common.redisclient import is_cluster_url
from loadtest import discovery_population, idle_cpu, soak_report, stack
from loadtest.discovery import DiscoveryReport, measure
from loadtest.generator import CONNECT_CONCURRENCY, chat_run, idle_run
from loadtest.processes import Services, cpu_seconds, used
from loadtest.report import ChatReport, IdleReport
from loadtest.soak import SoakOptions, soak

ROOT: Final = stack.ROOT
DEFAULT_DB_URL: Final = "postgresql+asyncpg://mergemeet@127.0.0.1:55432/mergemeet"
DEFAULT_REDIS: Final = "redis://127.0.0.1:56379/0"
SWEEP: Final = (0.1, 0.25, 0.5, 0.75, 0.9, 1.1)
TARGETS: Final = {
    "peak_delivered_per_s": ">= 10000 and >= 10x baseline",
    "half_peak_delivery_p99_ms": "<= 25",
    "half_peak_ack_p99_ms": "<= 15",
    "rss_per_idle_connection_kb": "<= 20 (10,000 held)",
    "connections_held": ">= 50000",
    "two_nodes_ratio": ">= 1.6x one node",
    "moderation_us_per_message": "<= 5",
    # Issue 17: the durable hot path at a peer's cost (100 pairs, 100-character bodies).
    "inflight_1_delivered_per_s": ">= 17000",
    "inflight_8_delivered_per_s": ">= 24000",
    "inflight_8_node_us_per_msg": "<= 40",
    "inflight_8_postgres_us_per_msg": "<= 40",
    "paced_3000_node_us_per_msg": "<= 100",
    "paced_3000_postgres_us_per_msg": "<= 60",
    "paced_3000_delivery_p50_ms": "<= 5",
    "paced_3000_delivery_p99_worst_ms": "<= 20 (every run)",
    "idle_open_s": "<= 4 (10,000 sockets, 64 at a time)",
    "storm_open_s": "<= 4 (10,000 sockets at once, fresh node)",
    # Issue 18: what crossing nodes costs, against both members on one node, same run.
    "cross_node_node_ratio": "<= 1.25x (node CPU per message, cross / same node)",
    "idle_cpu_head_node_us_per_user_10s_user_part": "<= 5 (19,000 idle users held)",
}
#: The issue-17 layout: as the independent client that measured the peer.
HOT_PATH: Final = {"pairs": 100, "body_chars": 100}
INFLIGHT_WINDOWS: Final = (1, 8)
CPU_PARTS: Final = ("node", "postgres", "redis")


class CpuMeter:
    """CPU time of the servers, this process and the bench's services between two marks.

    The marks are the generator's sending window (warm-up included), so connecting the
    sockets and the end-of-run check do not dilute the shares. PostgreSQL and Redis are the
    bench's own cluster database and server only (:mod:`loadtest.processes`).
    """

    def __init__(self, pids: list[int], services: Services) -> None:
        self.pids, self.services = pids, services
        self.marks: dict[str, tuple[float, list[float], float, dict[str, dict[int, float]]]] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = (
            time.perf_counter(),
            [cpu_seconds(pid) for pid in self.pids],
            time.process_time(),
            self.services.sample(),
        )

    def shares(self) -> dict[str, Any]:
        """Each process's share of a core over the window (``chat_run`` marks both ends)."""
        (t0, servers0, own0, services0), (t1, servers1, own1, services1) = (
            self.marks["start"],
            self.marks["end"],
        )
        wall = max(t1 - t0, 1e-9)
        return {
            "server_cpu": [
                round((b - a) / wall, 3) for a, b in zip(servers0, servers1, strict=True)
            ],
            "generator_cpu": round((own1 - own0) / wall, 3),
            "services_cpu": {
                name: round(used(services0[name], services1[name]) / wall, 3) for name in services0
            },
        }


def us_per_message(row: dict[str, Any]) -> dict[str, float]:
    """CPU µs per delivered message of the node(s), PostgreSQL and Redis, from a run's shares."""
    rate = max(row["delivered_per_s"], 1e-9)
    per = {"node": sum(row["server_cpu"]) / rate * 1e6}
    per |= {name: share / rate * 1e6 for name, share in row["services_cpu"].items()}
    return {name: round(value, 1) for name, value in per.items()}


def machine(services: Services) -> dict[str, Any]:
    """What the figures were measured on (lscpu, memory, kernel, versions, load)."""
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout  # noqa: S607
    model = re.search(r"Model name:\s*(.+)", lscpu)
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "postgresql": services.postgres_version,
        "redis": services.redis_version,
        "loadavg_start": os.getloadavg(),
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        base_db = os.environ.get("MM_DATABASE_URL", DEFAULT_DB_URL)
        base_redis = os.environ.get("MM_REDIS_URL", DEFAULT_REDIS)
        self.database_url = stack.prepare(base_db, args.database, args.revision)
        # A Redis Cluster has only database 0 (--redis-db is for one Redis).
        self.redis_url = (
            base_redis
            if is_cluster_url(base_redis)
            else stack.with_db_path(base_redis, f"/{args.redis_db}")
        )
        self.env = {
            "MM_ENV": "development",
            "MM_DATABASE_URL": self.database_url,
            "MM_REDIS_URL": self.redis_url,
            "MM_DATA_DIR": str((ROOT / ".data").resolve()),
            "MM_LOG_LEVEL": "WARNING",
            "MM_RATE_PER_S": "1000000",
            "MM_RATE_BURST": "1000000",
            "MM_MAX_CONNECTIONS_PER_USER": "100",
            "MM_DB_POOL_SIZE": "20",
        }
        # The generator (this process) reads the same settings: database, Redis, key folder.
        os.environ.update(self.env)
        from common.settings import get_settings

        get_settings.cache_clear()
        self.log_dir = ROOT / ".data" / "bench" / "logs"
        self.services = Services.find(self.database_url, self.redis_url)
        self.results: dict[str, Any] = {"machine": machine(self.services)}
        self.runs: dict[str, list[dict[str, Any]]] = {}
        self.src = Path(args.server_src).resolve()

    # -- servers -------------------------------------------------------------------------------

    def node(self, name: str = "node", core: str = "1") -> stack.Server:
        return stack.realtime_node(
            name, core=core, env=self.env, log_dir=self.log_dir, cwd=self.src
        )

    def baseline(self) -> stack.Server:
        return stack.baseline_server(core="1", env=self.env, log_dir=self.log_dir, cwd=self.src)

    def server(self, target: str) -> stack.Server:
        return self.node() if target == "mergemeet" else self.baseline()

    # -- figures ------------------------------------------------------------------------------

    def chat(self, label: str, servers: list[stack.Server], **options: Any) -> ChatReport:
        """One generator run (in this process, pinned to core 0); CPU shares while it sends."""
        a = self.args
        defaults: dict[str, Any] = {
            "pairs": a.pairs,
            "window": a.window,
            "duration_s": a.duration,
            "messages": a.messages,
            "warmup_s": a.warmup,
        }
        meter = CpuMeter([s.pid for s in servers], self.services)
        report = uvloop.run(
            chat_run(
                urls=[f"ws://127.0.0.1:{s.port}/" for s in servers],
                on_window=meter.mark,
                **(defaults | options),
            )
        )
        row = report.as_dict() | meter.shares()
        row["cpu_us_per_msg"] = us_per_message(row)
        self.runs.setdefault(label, []).append(row)
        print(
            f"[{label}]",
            *report.lines(),
            f"  CPU share while sending: server {row['server_cpu']}"
            f" generator {row['generator_cpu']} services {row['services_cpu']}",
            f"  CPU us per delivered message: {row['cpu_us_per_msg']}",
            sep="\n",
        )
        if not report.check["ok"]:
            print(f"!! {label}: end-of-run check FAILED: {report.check}")
        return report

    def peak(self, target: str) -> float:
        with stack.running(self.server(target)) as servers:
            for _ in range(self.args.runs):
                self.chat(f"peak_{target}", servers, target=target)
        return median([r["delivered_per_s"] for r in self.runs[f"peak_{target}"]])

    def offered(self, target: str, rates: list[float], label: str, duration: float) -> None:
        with stack.running(self.server(target)) as servers:
            for rate in rates:
                self.chat(label, servers, target=target, rate=rate, duration_s=duration)

    def cpu_figures(self, label: str) -> dict[str, float]:
        """Median CPU µs per delivered message of each part over the runs of ``label``."""
        rows = self.runs[label]
        return {
            f"{label}_{part}_us_per_msg": median([r["cpu_us_per_msg"][part] for r in rows])
            for part in CPU_PARTS
        }

    def idle(
        self, label: str, connections: int, runs: int, concurrency: int = CONNECT_CONCURRENCY
    ) -> None:
        for _ in range(runs):
            with stack.running(self.node()) as (node,):
                report: IdleReport = uvloop.run(
                    idle_run(
                        target="mergemeet",
                        urls=[f"ws://127.0.0.1:{node.port}/"],
                        connections=connections,
                        node_pid=node.pid,
                        per_user=100,
                        hold_s=self.args.hold,
                        concurrency=concurrency,
                    )
                )
            self.runs.setdefault(label, []).append(report.as_dict())
            print(f"[{label}]", *report.lines(), sep="\n")

    def idle_cpu(self) -> dict[str, float]:
        """Node and Redis CPU per hosted idle user per 10 s (:mod:`loadtest.idle_cpu`): this
        tree, and ``--baseline-src`` when given, the layouts and trees alternated run by run."""
        a = self.args
        trees = [("head", self.src)]
        if a.baseline_src:
            trees.append(("baseline", Path(a.baseline_src).resolve()))
        for _ in range(a.runs):
            for tree, src in trees:
                for layout, per_user in idle_cpu.LAYOUTS.items():
                    label = f"idle_cpu_{tree}_{layout}"
                    server = stack.realtime_node(
                        "node", core="1", env=self.env, log_dir=self.log_dir, cwd=src
                    )
                    with stack.running(server) as (node,):
                        meter = CpuMeter([node.pid], self.services)
                        row = uvloop.run(
                            idle_cpu.idle_cpu_run(
                                url=f"ws://127.0.0.1:{node.port}/",
                                connections=a.idle_cpu_connections,
                                per_user=per_user,
                                settle_s=a.idle_cpu_settle,
                                window_s=a.idle_cpu_window,
                                on_window=meter.mark,
                            )
                        )
                    row |= meter.shares() | {"tree": str(src)}
                    row |= idle_cpu.row_figures(row)
                    self.runs.setdefault(label, []).append(row)
                    print(f"[{label}]", {k: v for k, v in row.items() if k != "errors"})
        found: dict[str, float] = {}
        for tree, _ in trees:
            found |= idle_cpu.figures(self.runs, tree)
        return found

    def cross_node(self) -> dict[str, float]:
        """Node and Redis CPU per message with each pair's members on two nodes, against both
        on one node: the same two nodes (both on core 1, so neither shares the generator's
        core), the same paced rate, the two layouts alternated run by run.

        Two nodes on two cores cannot show scaling on this box (they share it with the
        generator, PostgreSQL and Redis); the price of crossing nodes per message can be shown.
        """
        a = self.args
        with stack.running(self.node("node-a", "1"), self.node("node-b", "1")) as servers:
            for _ in range(a.runs):
                for spread in ("same", "cross"):
                    self.chat(
                        f"cross_node_{spread}",
                        servers,
                        target="mergemeet",
                        spread=spread,
                        rate=a.cross_node_rate,
                        **HOT_PATH,
                    )
        same, cross = self.cpu_figures("cross_node_same"), self.cpu_figures("cross_node_cross")
        node_same = same["cross_node_same_node_us_per_msg"]
        node_cross = cross["cross_node_cross_node_us_per_msg"]
        return (
            same
            | cross
            | {"cross_node_node_ratio": round(node_cross / node_same, 2) if node_same else 0.0}
        )

    def moderation(self) -> float:
        values = []
        for _ in range(self.args.runs):
            out = subprocess.run(
                [sys.executable, "-m", "common.moderation", "--bench"],
                cwd=self.src,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found = re.search(r"clean: ([\d.]+)", out)
            values.append(float(found.group(1)) if found else float("nan"))
            print("[moderation]", out.strip().replace("\n", "; "))
        self.runs["moderation"] = [{"clean_us": v} for v in values]
        return median(values)

    def discovery(self) -> DiscoveryReport:
        """Seed the profiles, start the API (pinned like the other servers), time and explain."""
        from common.settings import get_settings

        a = self.args
        dsn = self.database_url.replace("+asyncpg", "")
        population = asyncio.run(discovery_population.seed(dsn, a.discovery_profiles))
        server = stack.api_server(core="1", env=self.env, log_dir=self.log_dir, cwd=self.src)
        with stack.running(server) as (api,):
            report = uvloop.run(
                measure(
                    f"http://127.0.0.1:{api.port}",
                    get_settings(),
                    population,
                    requests=a.discovery_requests,
                    max_s=a.discovery_seconds,
                )
            )
        self.runs["discovery"] = [report.as_dict()]
        print("[discovery]", *report.lines(), sep="\n")
        return report

    def soak(self) -> dict[str, Any]:
        """The bounded soak (:mod:`loadtest.soak`) on one node, judged and plotted."""
        a = self.args
        options = SoakOptions(
            duration_s=a.soak_minutes * 60,
            rate=a.soak_rate,
            pairs=a.soak_pairs,
            idle=a.soak_idle,
            churn_per_s=a.soak_churn,
            sample_s=a.soak_sample_s,
        )
        with stack.running(self.node()) as (node,):
            meter = CpuMeter([node.pid], self.services)
            url = f"ws://127.0.0.1:{node.port}/"
            record = uvloop.run(soak(options, urls=[url], node_pid=node.pid, on_window=meter.mark))
        found = soak_report.verdicts(record["samples"])
        record |= {"target": "mergemeet", "check": record["chat"]["check"], "cpu": meter.shares()}
        record["verdicts"] = [v.as_dict() for v in found]
        title = (
            f"soak: {options.rate:.0f} msg/s over {options.pairs} pairs, {options.idle} idle"
            f" sockets, {options.churn_per_s:g} reconnects/s, {a.soak_minutes:g} min"
        )
        soak_report.plot(record["samples"], found, Path(a.soak_plot), title)
        self.runs["soak"] = [record]
        print("[soak]", *soak_report.lines(record), f"  CPU share {record['cpu']}", sep="\n")
        return record

    # -- the whole procedure ------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a, figures = self.args, dict[str, Any]()
        only = set(a.only.split(",")) if a.only else None

        def wanted(name: str) -> bool:
            return only is None or name in only

        peak = base = 0.0
        if wanted("peak"):
            peak, base = self.peak("mergemeet"), self.peak("baseline")
            figures["peak_delivered_per_s"] = peak
            figures["baseline_delivered_per_s"] = base
            figures["peak_ratio_to_baseline"] = round(peak / base, 1) if base else None
            figures |= self.cpu_figures("peak_mergemeet")
        if wanted("inflight"):
            with stack.running(self.node()) as servers:
                for window in INFLIGHT_WINDOWS:
                    for _ in range(a.runs):
                        self.chat(
                            f"inflight_{window}",
                            servers,
                            target="mergemeet",
                            window=window,
                            **HOT_PATH,
                        )
            for window in INFLIGHT_WINDOWS:
                label = f"inflight_{window}"
                rows = self.runs[label]
                figures[f"{label}_delivered_per_s"] = median([r["delivered_per_s"] for r in rows])
                figures[f"{label}_delivery_p99_ms"] = median(
                    [r["send_to_delivery"]["p99"] for r in rows]
                )
                figures |= self.cpu_figures(label)
        if wanted("paced"):
            with stack.running(self.node()) as servers:
                for rate in a.paced_rates:
                    for _ in range(a.runs):
                        self.chat(
                            f"paced_{rate}", servers, target="mergemeet", rate=rate, **HOT_PATH
                        )
            for rate in a.paced_rates:
                label = f"paced_{rate}"
                rows = self.runs[label]
                p99s = [r["send_to_delivery"]["p99"] for r in rows]
                figures[f"{label}_delivery_p50_ms"] = median(
                    [r["send_to_delivery"]["p50"] for r in rows]
                )
                figures[f"{label}_delivery_p99_ms"] = median(p99s)
                figures[f"{label}_delivery_p99_worst_ms"] = max(p99s)
                figures[f"{label}_release_lag_p99_worst_ms"] = max(
                    r["release_lag"]["p99"] for r in rows
                )
                figures |= self.cpu_figures(label)
        if wanted("latency") and peak:
            self.offered("mergemeet", [peak / 2] * a.runs, "half_peak", a.duration)
            figures["half_peak_rate"] = round(peak / 2)
            rows = self.runs["half_peak"]
            figures["half_peak_delivery_p99_ms"] = median(
                [r["send_to_delivery"]["p99"] for r in rows]
            )
            figures["half_peak_ack_p99_ms"] = median([r["send_to_ack"]["p99"] for r in rows])
            # The generator's own share of those figures (the same sends, released late).
            figures["half_peak_release_lag_p99_ms"] = median(
                [r["release_lag"]["p99"] for r in rows]
            )
            if base:
                self.offered("baseline", [base / 2] * a.runs, "half_peak_baseline", a.duration)
                rows = self.runs["half_peak_baseline"]
                figures["baseline_half_peak_delivery_p99_ms"] = median(
                    [r["send_to_delivery"]["p99"] for r in rows]
                )
                figures["baseline_half_peak_ack_p99_ms"] = median(
                    [r["send_to_ack"]["p99"] for r in rows]
                )
        if wanted("sweep") and peak and base:
            sweep_s = max(3.0, a.duration / 2)
            self.offered("mergemeet", [peak * f for f in SWEEP], "sweep_mergemeet", sweep_s)
            self.offered("baseline", [base * f for f in SWEEP], "sweep_baseline", sweep_s)
            plot(self.runs, Path(a.plot))
        if wanted("idle"):
            self.idle("idle", a.idle_connections, a.runs)
            figures["rss_per_idle_connection_kb"] = median(
                [r["rss_per_connection_kb"] for r in self.runs["idle"]]
            )
            # Time the node stood still in full collections while the sockets opened and held.
            figures["idle_full_gc_pause_ms"] = median(
                [r["gc_pauses"]["2"]["seconds"] * 1000 for r in self.runs["idle"] if r["gc_pauses"]]
            )
            figures["idle_open_s"] = median([r["open_s"] for r in self.runs["idle"]])
        if wanted("storm"):
            # As after a deploy: every socket reconnects at once to a node that just started.
            connections = a.idle_connections
            self.idle("storm", connections, a.runs, concurrency=connections)
            figures["storm_open_s"] = median([r["open_s"] for r in self.runs["storm"]])
            figures["storm_opened"] = median([r["opened"] for r in self.runs["storm"]])
        if wanted("capacity"):
            self.idle("capacity", a.capacity_connections, a.capacity_runs)
            figures["connections_held"] = median([r["held"] for r in self.runs["capacity"]])
        if wanted("two_nodes") and peak:
            with stack.running(self.node("node-a", "1"), self.node("node-b", "0")) as servers:
                for _ in range(a.runs):
                    self.chat("two_nodes", servers, target="mergemeet", spread="cross")
            two = median([r["delivered_per_s"] for r in self.runs["two_nodes"]])
            figures["two_nodes_delivered_per_s"] = two
            figures["two_nodes_ratio"] = round(two / peak, 2)
        if wanted("cross_node"):
            figures |= self.cross_node()
        if only is not None and "idle_cpu" in only:  # minutes of idle: only when named
            figures |= self.idle_cpu()
        if wanted("moderation"):
            figures["moderation_us_per_message"] = self.moderation()
        if wanted("discovery"):
            found = self.discovery()
            figures["discovery_profiles"] = found.profiles
            figures["discovery_p50_ms"] = found.latency.p50
            figures["discovery_p99_ms"] = found.latency.p99
            figures["discovery_max_ms"] = found.latency.max
            figures["discovery_requests_over_1s"] = sum(
                len(found.slow(i)) for i in range(len(found.samples_ms))
            )
            figures["discovery_requests_per_s"] = found.requests_per_s
            figures["discovery_gist_custom_plans"] = found.gist_used(found.custom_plans)
            figures["discovery_gist_generic_plans"] = found.gist_used(found.generic_plans)
        if only is not None and "soak" in only:  # never part of a full bench: 30 minutes
            record = self.soak()
            figures["soak_check_ok"] = record["check"]["ok"]
            figures["soak_delivered_per_s"] = record["chat"]["delivered_per_s"]
            figures["soak_reconnects"] = record["idle"]["reconnects"]
            figures["soak_growing"] = [
                v["series"] for v in record["verdicts"] if v["verdict"] != "levels off"
            ]
        self.results["machine"]["loadavg_end"] = os.getloadavg()
        self.results["figures"] = figures
        self.results["targets"] = TARGETS
        self.results["runs"] = self.runs
        # Our guarantees are checked on every MergeMeet run; the baseline's check is reported
        # (a conventional server that drops a socket loses its deliveries) but not ours to pass.
        self.results["checks_ok"] = all(
            r["check"]["ok"]
            for rows in self.runs.values()
            for r in rows
            if "check" in r and r["target"] == "mergemeet"
        )
        self.results["command"] = " ".join(sys.argv)
        return self.results


def plot(runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Delivered msg/s and p99 latencies against offered load, for both systems (log axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for label, name, color in (
        ("sweep_mergemeet", "MergeMeet node", "tab:blue"),
        ("sweep_baseline", "FastAPI baseline", "tab:red"),
    ):
        rows = sorted(runs.get(label, []), key=lambda r: r["offered_rate"])
        x = [r["offered_rate"] for r in rows]
        top.plot(x, [r["delivered_per_s"] for r in rows], "o-", color=color, label=name)
        bottom.plot(
            x,
            [r["send_to_delivery"]["p99"] for r in rows],
            "o-",
            color=color,
            label=f"{name}: send→delivery p99",
        )
        bottom.plot(
            x,
            [r["send_to_ack"]["p99"] for r in rows],
            "s--",
            color=color,
            alpha=0.6,
            label=f"{name}: send→ack p99",
        )
    lo = min((r["offered_rate"] for k in runs if k.startswith("sweep") for r in runs[k]), default=1)
    hi = max((r["offered_rate"] for k in runs if k.startswith("sweep") for r in runs[k]), default=1)
    top.plot([lo, hi], [lo, hi], ":", color="grey", label="delivered = offered")
    top.set_ylabel("delivered messages/s")
    bottom.set_ylabel("latency p99 (ms)")
    bottom.set_xlabel("offered load (messages/s)")
    for ax in (top, bottom):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    top.set_title("1:1 chat, one process on one core, every message acked after commit")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(results: dict[str, Any]) -> list[str]:
    f = results["figures"]
    lines = ["", "figure                                  median       target"]
    for key, value in f.items():
        lines.append(f"  {key:<38}{value!s:>12}   {TARGETS.get(key, '')}")
    lines.append(f"  end-of-run checks all ok: {results['checks_ok']}")
    m = results["machine"]
    lines.append(f"  load average start {m['loadavg_start']} end {m.get('loadavg_end')}")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per chat run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--pairs", type=int, default=50)
    p.add_argument("--window", type=int, default=16)
    p.add_argument("--messages", type=int, default=2_000_000, help="cap on sends per run")
    p.add_argument("--idle-connections", type=int, default=10_000)
    p.add_argument("--capacity-connections", type=int, default=50_000)
    p.add_argument("--capacity-runs", type=int, default=1)
    p.add_argument("--hold", type=float, default=5.0, help="seconds idle sockets are held")
    p.add_argument(
        "--only",
        default="",
        help="comma list: peak,latency,sweep,inflight,paced,idle,storm,capacity,two_nodes,"
        "cross_node,moderation,discovery,soak,idle_cpu (soak and idle_cpu only when named)",
    )
    p.add_argument("--idle-cpu-connections", type=int, default=19_000)
    p.add_argument("--idle-cpu-window", type=float, default=60.0, help="seconds measured")
    p.add_argument("--idle-cpu-settle", type=float, default=5.0, help="seconds after opening")
    p.add_argument(
        "--baseline-src",
        default="",
        help="idle_cpu: also run the node from this checkout, alternated with --server-src",
    )
    p.add_argument(
        "--cross-node-rate",
        type=int,
        default=3000,
        help="offered msg/s of the cross_node figure (both layouts)",
    )
    p.add_argument("--soak-minutes", type=float, default=30.0)
    p.add_argument("--soak-rate", type=float, default=2000.0, help="offered msg/s")
    p.add_argument("--soak-pairs", type=int, default=100)
    p.add_argument("--soak-idle", type=int, default=5000, help="idle sockets")
    p.add_argument("--soak-churn", type=float, default=10.0, help="idle reconnects per second")
    p.add_argument("--soak-sample-s", type=float, default=60.0, help="seconds between samples")
    p.add_argument("--soak-plot", default=str(ROOT / "docs" / "bench-soak.png"))
    p.add_argument(
        "--paced-rates",
        type=lambda text: [int(r) for r in text.split(",")],
        default=[1000, 3000],
        help="offered msg/s of the paced figure (comma list)",
    )
    p.add_argument("--discovery-profiles", type=int, default=20_000)
    p.add_argument("--discovery-requests", type=int, default=400, help="cap on timed requests")
    p.add_argument("--discovery-seconds", type=float, default=90.0, help="cap on timed seconds")
    p.add_argument("--database", default="mergemeet_bench")
    p.add_argument("--redis-db", type=int, default=13)
    p.add_argument("--server-src", default=str(ROOT), help="checkout the servers run from")
    p.add_argument(
        "--revision",
        default="head",
        help="migrate the bench database to this revision (the one --server-src expects)",
    )
    p.add_argument("--plot", default=str(ROOT / "docs" / "bench-offered-load.png"))
    p.add_argument("--out", default=str(ROOT / ".data" / "bench"))
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()
    results = Bench(args).run()
    results["elapsed_s"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in (f"results-{stamp}.json", "latest.json"):
        (out / name).write_text(json.dumps(results, indent=2, default=str))
    print("\n".join(summary(results)))
    print(f"results: {out / 'latest.json'}  ({results['elapsed_s']} s)")
    if not results["checks_ok"]:
        sys.exit(2)


if __name__ == "__main__":
    main()

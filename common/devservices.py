"""Private PostgreSQL+PostGIS and Redis for one checkout, without Docker.

``python3 -m common.devservices start|stop|status|createdb NAME`` (also ``mergemeet-services``).
Data lives under ``.data/`` (git-ignored), on ports of its own (55432 and 56379 by default,
``MM_DEV_PG_PORT`` / ``MM_DEV_REDIS_PORT``) so it works where the standard ports are taken.
``start-cluster`` also starts a local Redis Cluster: 3 masters and 3 replicas (Debian's
``redis-server`` with ``cluster-enabled yes``) on six ports from ``MM_DEV_CLUSTER_PORT``
(27001 by default; each node's cluster bus 10000 below its port: both below Linux's ephemeral
range, 32768-60999, where a client connection's local port once took a bus port and a node
failed to start), created once with
``redis-cli --cluster create``; its URL is printed and
given by ``cluster-url``. ``stop`` stops whatever of both is running.
On first use it initialises the cluster; when the Debian packages are missing it installs them
if run as root, and otherwise prints the exact command. Standard library only, so it runs before
the virtual environment exists.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MM_DEV_DATA", ROOT / ".data")).resolve()
PG_PORT = int(os.environ.get("MM_DEV_PG_PORT", "55432"))
REDIS_PORT = int(os.environ.get("MM_DEV_REDIS_PORT", "56379"))
PG_DIR = DATA / "pg"
PG_RUN = DATA / "pg-run"
REDIS_DIR = DATA / "redis"
CLUSTER_PORT = int(os.environ.get("MM_DEV_CLUSTER_PORT", "27001"))
CLUSTER_DIR = DATA / "redis-cluster"
CLUSTER_MASTERS = 3
#: How long a master may be unreachable before its replica takes over (ms): short, for tests.
CLUSTER_NODE_TIMEOUT_MS = 1000
DB_USER = "mergemeet"
APT_PACKAGES = ("postgresql", "postgresql-postgis", "redis-server")


def _log(message: str) -> None:
    print(f"[services] {message}", flush=True)


def _pg_bin() -> Path | None:
    """The newest installed PostgreSQL server binaries that also have PostGIS."""
    base = Path("/usr/lib/postgresql")
    if not base.is_dir():
        return None
    for version in sorted(base.iterdir(), key=lambda p: int(p.name), reverse=True):
        has_postgis = any(
            Path(f"/usr/share/postgresql/{version.name}/extension").glob("postgis.control")
        )
        if (version / "bin" / "pg_ctl").exists() and has_postgis:
            return version / "bin"
    return None


def ensure_packages() -> None:
    """Install PostgreSQL, PostGIS and Redis from Debian's packages when any is missing."""
    if _pg_bin() is not None and shutil.which("redis-server"):
        return
    command = "apt-get update && apt-get install -y " + " ".join(APT_PACKAGES)
    if os.geteuid() != 0:
        sys.exit(f"[services] PostgreSQL+PostGIS or Redis is missing; run as root:\n  {command}")
    _log(f"installing: {' '.join(APT_PACKAGES)}")
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], check=True, env=env)
    if _pg_bin() is None:
        sys.exit("[services] PostGIS was installed but no matching server was found")


def _as_db_owner(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the ``postgres`` user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


def _owner_ids() -> tuple[int, int]:
    if os.geteuid() == 0:
        entry = pwd.getpwnam("postgres")
        return entry.pw_uid, entry.pw_gid
    return os.getuid(), os.getgid()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _port_open(port):
            return
        time.sleep(0.1)
    sys.exit(f"[services] {what} did not open port {port} within {seconds:.0f}s")


def _psql(sql: str, database: str = "postgres") -> str:
    bin_dir = _pg_bin()
    assert bin_dir is not None
    result = subprocess.run(
        _as_db_owner(
            [
                str(bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(PG_PORT),
                "-U",
                DB_USER,
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-tAc",
                sql,
            ]
        ),
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def _reachable_by_postgres(path: Path) -> bool:
    """Whether the ``postgres`` user can reach ``path`` (or, if missing, its nearest ancestor)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    command = ["runuser", "-u", "postgres", "--", "test", "-x", str(probe)]
    return subprocess.run(command, check=False).returncode == 0


def _locate_postgres() -> None:
    """As root, PostgreSQL runs as ``postgres``, which cannot enter a checkout under a private
    folder such as ``/root``: its files then go to a folder of their own in the ``postgres``
    user's home (not world-writable; named after the checkout, so the next run finds the same
    data)."""
    global PG_DIR, PG_RUN
    if os.geteuid() != 0 or _reachable_by_postgres(PG_DIR.parent):
        return
    digest = hashlib.sha256(str(PG_DIR).encode()).hexdigest()[:12]
    base = Path(pwd.getpwnam("postgres").pw_dir) / f"mergemeet-{digest}"
    PG_DIR, PG_RUN = base / "pg", base / "pg-run"
    _log(f"the postgres user cannot reach {DATA}; PostgreSQL's files are in {base}")


def start_postgres() -> None:
    bin_dir = _pg_bin()
    assert bin_dir is not None
    _locate_postgres()
    uid, gid = _owner_ids()
    for folder in (DATA, PG_RUN):
        folder.mkdir(parents=True, exist_ok=True)
    os.chown(PG_RUN, uid, gid)
    if not (PG_DIR / "PG_VERSION").exists():
        _log(f"initialising PostgreSQL in {PG_DIR}")
        PG_DIR.mkdir(parents=True, exist_ok=True)
        os.chown(PG_DIR, uid, gid)
        PG_DIR.chmod(0o700)
        subprocess.run(
            _as_db_owner(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(PG_DIR),
                    "-U",
                    DB_USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
    if _port_open(PG_PORT):
        _log(f"PostgreSQL already listening on 127.0.0.1:{PG_PORT}")
    else:
        options = (
            f"-p {PG_PORT} -c listen_addresses=127.0.0.1 -c unix_socket_directories={PG_RUN} "
            "-c max_connections=300 -c shared_buffers=256MB -c synchronous_commit=on"
        )
        subprocess.run(
            _as_db_owner(
                [
                    str(bin_dir / "pg_ctl"),
                    "-D",
                    str(PG_DIR),
                    "-l",
                    str(PG_RUN / "postgres.log"),
                    "-o",
                    options,
                    "-w",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        _wait_port(PG_PORT, "PostgreSQL")
        _log(f"PostgreSQL started on 127.0.0.1:{PG_PORT}")
    createdb("mergemeet")


def createdb(name: str, *, fresh: bool = False) -> None:
    """Create database ``name`` with PostGIS; ``fresh`` drops it first."""
    if not name.replace("_", "").isalnum():
        sys.exit(f"[services] bad database name {name!r}")
    if fresh:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if _psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'") != "1":
        _psql(f'CREATE DATABASE "{name}"')
        _log(f"created database {name}")
    _psql("CREATE EXTENSION IF NOT EXISTS postgis", database=name)


def start_redis() -> None:
    if _port_open(REDIS_PORT):
        _log(f"Redis already listening on 127.0.0.1:{REDIS_PORT}")
        return
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(REDIS_PORT),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(REDIS_DIR),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "yes",
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--logfile",
            str(DATA / "redis.log"),
        ],
        check=True,
    )
    _wait_port(REDIS_PORT, "Redis")
    _log(f"Redis started on 127.0.0.1:{REDIS_PORT} (append-only file on)")


def cluster_ports() -> list[int]:
    """The masters' ports first, then their replicas'."""
    return [CLUSTER_PORT + i for i in range(2 * CLUSTER_MASTERS)]


def cluster_url() -> str:
    """``MM_REDIS_URL`` for the local cluster (its masters as seeds)."""
    seeds = ",".join(f"127.0.0.1:{port}" for port in cluster_ports()[:CLUSTER_MASTERS])
    return f"redis+cluster://{seeds}"


def _redis_cli(port: int, *args: str) -> str:
    result = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def cluster_state(port: int) -> dict[str, str]:
    """``CLUSTER INFO`` of one node as a dict (empty if it does not answer)."""
    try:
        info = _redis_cli(port, "cluster", "info")
    except subprocess.CalledProcessError:
        return {}
    return dict(line.split(":", 1) for line in info.split() if ":" in line)


def start_cluster_node(port: int) -> None:
    """One cluster node, daemonised, its files (nodes.conf, log, pid) in its own folder."""
    if _port_open(port):
        return
    folder = CLUSTER_DIR / str(port)
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(folder),
            "--cluster-enabled",
            "yes",
            # The bus defaults to port + 10000, past 65535 for these ports: 10000 below instead.
            "--cluster-port",
            str(port - 10000),
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(CLUSTER_NODE_TIMEOUT_MS),
            # A shard whose master is down must not stop the others answering.
            "--cluster-require-full-coverage",
            "no",
            "--appendonly",
            "no",
            "--save",
            "",
            "--daemonize",
            "yes",
            "--pidfile",
            str(folder / "redis.pid"),
            "--logfile",
            str(folder / "redis.log"),
        ],
        check=True,
    )
    _wait_port(port, f"Redis Cluster node {port}")


def wait_cluster_ok(seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        states = [cluster_state(port) for port in cluster_ports()]
        if all(state.get("cluster_state") == "ok" for state in states):
            return
        time.sleep(0.2)
    sys.exit(f"[services] the Redis Cluster on {CLUSTER_PORT}+ was not ok within {seconds:.0f}s")


def start_cluster() -> None:
    """Start the six nodes (idempotent); create the cluster once, when its nodes know no other."""
    for port in cluster_ports():
        start_cluster_node(port)
    if cluster_state(CLUSTER_PORT).get("cluster_known_nodes") == "1":
        _log("creating the Redis Cluster (3 masters, 3 replicas)")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in cluster_ports()),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    wait_cluster_ok()
    _log(f"Redis Cluster up on 127.0.0.1:{CLUSTER_PORT}-{cluster_ports()[-1]}: {cluster_url()}")


def stop_cluster() -> None:
    stopped = False
    for port in cluster_ports():
        pid_file = CLUSTER_DIR / str(port) / "redis.pid"
        if not pid_file.exists():
            continue
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), 15)
            stopped = True
        deadline = time.monotonic() + 10
        while _port_open(port) and time.monotonic() < deadline:
            time.sleep(0.1)
    if stopped:
        _log("Redis Cluster stopped")


def stop() -> None:
    bin_dir = _pg_bin()
    if bin_dir is not None:
        _locate_postgres()
    if bin_dir is not None and (PG_DIR / "postmaster.pid").exists():
        subprocess.run(
            _as_db_owner([str(bin_dir / "pg_ctl"), "-D", str(PG_DIR), "-m", "fast", "-w", "stop"]),
            check=False,
            stdout=subprocess.DEVNULL,
        )
        _log("PostgreSQL stopped")
    pid_file = REDIS_DIR / "redis.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().strip())
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while _port_open(REDIS_PORT) and time.monotonic() < deadline:
            time.sleep(0.1)
        _log("Redis stopped")
    stop_cluster()


def status() -> int:
    pg, redis = _port_open(PG_PORT), _port_open(REDIS_PORT)
    _log(f"PostgreSQL 127.0.0.1:{PG_PORT} {'up' if pg else 'down'}")
    _log(f"Redis 127.0.0.1:{REDIS_PORT} {'up' if redis else 'down'}")
    if CLUSTER_DIR.exists():
        up = [port for port in cluster_ports() if _port_open(port)]
        state = cluster_state(up[0]).get("cluster_state", "?") if up else "down"
        _log(f"Redis Cluster {len(up)}/{len(cluster_ports())} nodes up, state {state}")
    return 0 if pg and redis else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mergemeet-services", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("start", help="install if missing, initialise, start both")
    sub.add_parser("stop", help="stop both, and the Redis Cluster if it runs (data is kept)")
    sub.add_parser("start-cluster", help="start (and create once) the local Redis Cluster")
    sub.add_parser("cluster-url", help="print MM_REDIS_URL for the local Redis Cluster")
    sub.add_parser("status", help="exit 0 when both answer")
    create = sub.add_parser("createdb", help="create a database with PostGIS")
    create.add_argument("name")
    create.add_argument("--fresh", action="store_true", help="drop it first")
    args = parser.parse_args(argv)
    if args.command == "start":
        ensure_packages()
        start_postgres()
        start_redis()
    elif args.command == "stop":
        stop()
    elif args.command == "start-cluster":
        ensure_packages()
        start_cluster()
    elif args.command == "cluster-url":
        print(cluster_url())
    elif args.command == "status":
        return status()
    elif args.command == "createdb":
        createdb(args.name, fresh=args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())

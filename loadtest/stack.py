"""The servers a benchmark measures: a fresh database, realtime nodes and the baseline, pinned.

Owns preparing the benchmark's own database on the project's dev services (dropped, created and
migrated with ``alembic upgrade head``, so load users never mix with development data), and
starting and stopping the measured servers (realtime nodes, the baseline, the API) as child
processes pinned with ``taskset -c <core>``, with the open-file limit raised for them
(``resource``, in the child before exec). Servers are stopped by their own pid only. Every wait
is bounded. It never generates load (:mod:`loadtest.generator` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ROOT: Final = Path(__file__).resolve().parent.parent
NOFILE: Final = 200_000


def with_db_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


async def recreate_database(database_url: str, name: str, *, create: bool = True) -> str:
    """Drop and create ``name`` next to ``database_url``'s database; return the new URL.

    With ``create=False`` it only drops it (a test's private database, on the way out).
    """
    admin = with_db_path(database_url, "/postgres").replace("+asyncpg", "")
    con = await asyncpg.connect(admin)
    try:
        await con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            await con.execute(f'CREATE DATABASE "{name}"')
    finally:
        await con.close()
    return with_db_path(database_url, f"/{name}")


def migrate(database_url: str, revision: str = "head") -> None:
    env = os.environ | {"MM_DATABASE_URL": database_url}
    argv = [sys.executable, "-m", "alembic", "upgrade", revision]
    subprocess.run(argv, cwd=ROOT, env=env, check=True)  # noqa: S603 - fixed argv, our revision


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _raise_nofile() -> None:
    """Runs in the child before exec: as many open files as the kernel allows us."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, max(NOFILE, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pinned(core: str | None, argv: list[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return argv
    return ["taskset", "-c", core, *argv]


class Server:
    """One server child process (``python -m <module> ...``) on a loopback port."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        *,
        port: int,
        env: dict[str, str],
        core: str | None,
        log_dir: Path,
        cwd: Path = ROOT,
    ) -> None:
        self.name, self.port, self.cwd = name, port, cwd
        self.argv = pinned(core, argv)
        self.env = os.environ | env
        self.log_path = log_dir / f"{name}-{port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's own pid (``taskset`` execs the server, so the pid stays the same)."""
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout_s: float = 20.0) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv built here
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=log,
            preexec_fn=_raise_nofile,  # the child has no threads before exec
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited, see {self.log_path}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} not listening on {self.port}, see {self.log_path}")

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout_s)


def realtime_node(
    name: str, *, core: str | None, env: dict[str, str], log_dir: Path, cwd: Path = ROOT
) -> Server:
    port = free_port()
    node_env = env | {
        "MM_REALTIME_PORT": str(port),
        "MM_NODE_ID": f"{name}-{port}",
        "MM_REALTIME_PUBLIC_URL": f"ws://127.0.0.1:{port}",
    }
    argv = [sys.executable, "-m", "realtime"]
    return Server(name, argv, port=port, env=node_env, core=core, log_dir=log_dir, cwd=cwd)


def baseline_server(
    *, core: str | None, env: dict[str, str], log_dir: Path, cwd: Path = ROOT
) -> Server:
    port = free_port()
    argv = [sys.executable, "-m", "loadtest.baseline_fastapi", "--port", str(port)]
    return Server("baseline", argv, port=port, env=env, core=core, log_dir=log_dir, cwd=cwd)


def api_server(*, core: str | None, env: dict[str, str], log_dir: Path, cwd: Path = ROOT) -> Server:
    """The API (``python -m api``: uvicorn, one process) on a free loopback port."""
    port = free_port()
    api_env = env | {"MM_API_HOST": "127.0.0.1", "MM_API_PORT": str(port)}
    argv = [sys.executable, "-m", "api"]
    return Server("api", argv, port=port, env=api_env, core=core, log_dir=log_dir, cwd=cwd)


@contextlib.contextmanager
def running(*servers: Server) -> Iterator[list[Server]]:
    """Start servers in order, stop them all (by pid) in reverse on the way out."""
    started: list[Server] = []
    try:
        for server in servers:
            started.append(server.start())
        yield started
    finally:
        for server in reversed(started):
            server.stop()


def prepare(database_url: str, name: str, revision: str = "head") -> str:
    url = asyncio.run(recreate_database(database_url, name))
    migrate(url, revision)
    return url


Factory = Callable[[], Server]

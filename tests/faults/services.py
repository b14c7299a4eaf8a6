"""A private PostgreSQL+PostGIS cluster and Redis for the fault tests, which they may break.

The shared services (55432/56379) are used by everyone else's tests and are never touched
here: this cluster lives in a temporary directory, on free ports, and every destructive action
(stop, SIGKILL, SIGSTOP, wipe) names its target by this directory's pid files. Starting reuses
:mod:`common.devservices` (initdb, ``pg_ctl start`` with its options, PostGIS in the database,
``redis-server`` with its append-only file) by pointing that module's paths and ports at the
private ones for the duration of the call; stopping and breaking are done here, by pid.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from common import devservices
from tests.support import TICK, free_port

DB_NAME = "mergemeet"


class PrivateServices:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mm-faults-"))
        # PostgreSQL runs as `postgres` when we are root: it must be able to enter the directory.
        self.root.chmod(0o755)
        self.pg_port, self.redis_port = free_port(), free_port()
        self.pg_dir = self.root / "pg"
        self.pg_run = self.root / "pg-run"
        self.redis_dir = self.root / "redis"
        self.paused = False

    @property
    def database_url(self) -> str:
        return f"postgresql+asyncpg://{devservices.DB_USER}@127.0.0.1:{self.pg_port}/{DB_NAME}"

    @property
    def dsn(self) -> str:
        return self.database_url.replace("+asyncpg", "")

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @contextlib.contextmanager
    def _targeted(self) -> Iterator[None]:
        """Point common.devservices at this private cluster for one call."""
        names = ("DATA", "PG_DIR", "PG_RUN", "REDIS_DIR", "PG_PORT", "REDIS_PORT")
        saved = {name: getattr(devservices, name) for name in names}
        values = (
            self.root,
            self.pg_dir,
            self.pg_run,
            self.redis_dir,
            self.pg_port,
            self.redis_port,
        )
        for name, value in zip(names, values, strict=True):
            setattr(devservices, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(devservices, name, value)

    # -- start --------------------------------------------------------------------------------

    def start(self) -> None:
        self.start_postgres()
        self.start_redis()

    def start_postgres(self) -> None:
        with self._targeted():
            devservices.start_postgres()

    def start_redis(self) -> None:
        with self._targeted():
            devservices.start_redis()

    # -- PostgreSQL faults -------------------------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        bin_dir = devservices._pg_bin()
        assert bin_dir is not None
        command = [str(bin_dir / "pg_ctl"), "-D", str(self.pg_dir), *args]
        subprocess.run(
            devservices._as_db_owner(command), check=True, stdout=subprocess.DEVNULL, timeout=60
        )

    def stop_postgres(self, mode: str = "fast") -> None:
        self._pg_ctl("-m", mode, "-w", "stop")

    def postgres_pids(self) -> list[int]:
        """The postmaster and every process it forked (backends, checkpointer, walwriter...)."""
        postmaster = int((self.pg_dir / "postmaster.pid").read_text().split()[0])
        children = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                # Field 4 (ppid) comes after the command, which is in parentheses.
                if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                    children.append(int(entry.name))
        return [postmaster, *children]

    def pause_postgres(self) -> None:
        """SIGSTOP the whole cluster: connections hang instead of failing.

        The postmaster first, so it forks no new backend while its children are being stopped
        (a backend forked in between would keep serving a connection through the "pause").
        """
        self.paused = True
        postmaster, *_ = self.postgres_pids()
        os.kill(postmaster, signal.SIGSTOP)
        for pid in self.postgres_pids()[1:]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume_postgres(self) -> None:
        for pid in self.postgres_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused = False

    # -- Redis faults ------------------------------------------------------------------------

    def redis_pid(self) -> int:
        return int((self.redis_dir / "redis.pid").read_text().strip())

    def kill_redis(self) -> None:
        """``kill -9``: what was not yet in the append-only file (up to ~1 s) is gone."""
        pid = self.redis_pid()
        os.kill(pid, signal.SIGKILL)
        _wait_gone(pid)
        (self.redis_dir / "redis.pid").unlink(missing_ok=True)

    def wipe_redis(self) -> None:
        """Kill Redis and delete its data: it comes back empty."""
        self.kill_redis()
        for path in list(self.redis_dir.iterdir()):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()

    # -- cleanup -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop both (by this directory's pid files) and delete the directory."""
        if self.paused:
            self.resume_postgres()
        if (self.pg_dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop_postgres("immediate")
        with contextlib.suppress(OSError, ValueError):
            self.kill_redis()
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_gone(pid: int, timeout: float = 100 * TICK) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # A killed child of a daemon is reaped by init; a zombie still answers kill(0).
        with contextlib.suppress(OSError):
            if (Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]) == "Z":
                return
        time.sleep(TICK)
    raise TimeoutError(f"process {pid} still alive")

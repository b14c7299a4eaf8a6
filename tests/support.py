"""Helpers shared by the tests: time units, free ports, child processes of the real servers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

#: One time unit for every sleep and timeout in tests; scale with MM_TEST_TIME_SCALE.
TICK = 0.05 * float(os.environ.get("MM_TEST_TIME_SCALE", "1"))
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, timeout: float = 200 * TICK) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(TICK)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(TICK)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


class ServiceProcess:
    """A real server in a child process (``python -m <module>``), stopped by its own pid."""

    def __init__(self, module: str, port: int, env: dict[str, str] | None = None) -> None:
        self.module, self.port = module, port
        self.env = os.environ | (env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = ROOT / ".data" / "test-logs" / f"{module}-{port}.log"

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module], env=self.env, stdout=log, stderr=log, cwd=ROOT
        )
        wait_for_port(self.port)
        return self

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 200 * TICK) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout)

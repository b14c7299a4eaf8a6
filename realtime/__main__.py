"""``python -m realtime [--workers N]`` / ``mergemeet-realtime``: run realtime nodes on uvloop.

``python -m realtime nodes [--json]`` lists the live nodes instead (see :mod:`realtime.cli`).

With ``--workers N`` (N > 1) this process only supervises: it starts N child processes that
share the port with ``SO_REUSEPORT`` (the kernel spreads connections), each a separate node with
its own id and delivery stream, forwards SIGTERM/SIGINT to them and exits when they have.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from types import FrameType

import uvloop

from common.settings import get_settings
from realtime.cli import nodes_command
from realtime.server import run


def supervise(workers: int) -> int:
    env = os.environ | {"MM_REALTIME_REUSE_PORT": "true"}
    env.pop("MM_NODE_ID", None)  # each worker is a node of its own
    children = [
        subprocess.Popen([sys.executable, "-m", "realtime"], env=env) for _ in range(workers)
    ]

    def forward(signum: int, _frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max((child.wait() for child in children), default=0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mergemeet-realtime")
    parser.add_argument(
        "command",
        nargs="?",
        choices=("serve", "nodes"),
        default="serve",
        help="serve (default): run a node; nodes: list the live nodes and connection count",
    )
    parser.add_argument("--workers", type=int, default=1, help="node processes (one per core)")
    parser.add_argument("--json", action="store_true", help="nodes: print JSON")
    args = parser.parse_args(argv)
    if args.command == "nodes":
        sys.exit(nodes_command(get_settings(), as_json=args.json))
    if args.workers > 1:
        sys.exit(supervise(args.workers))
    uvloop.run(run(get_settings()))


if __name__ == "__main__":
    main()

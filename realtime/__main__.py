"""``python -m realtime`` / ``mergemeet-realtime``: run one realtime node on uvloop."""

from __future__ import annotations

import uvloop

from common.settings import get_settings
from realtime.server import run


def main() -> None:
    uvloop.run(run(get_settings()))


if __name__ == "__main__":
    main()

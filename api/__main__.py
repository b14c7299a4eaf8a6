"""``python -m api`` / ``mergemeet-api``: serve the API with uvicorn on the configured port."""

from __future__ import annotations

import uvicorn

from common.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "api.main:app",
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http="httptools",
        # Client addresses (login throttling is per IP) come from X-Forwarded-For only when the
        # peer is one of these proxies; anyone else's header is ignored.
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        access_log=False,
        log_config=None,
    )


if __name__ == "__main__":
    main()

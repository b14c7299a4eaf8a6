"""Settings for both services, read once from the environment (prefix ``MM_``) and ``.env``.

Owns validation at start-up: a bad value stops the process with a message that names the
variable, and outside development no secret may be a placeholder. It must not read anything
else (no database, no Redis): it is imported by every process, tests included.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

Environment = Literal["development", "test", "production"]

#: Values that mean "nobody set this": refused outside development and test.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "development"})
MIN_SECRET_LENGTH = 32
DEV_SECRET = "dev-only-secret-do-not-use-in-production-0123456789"  # noqa: S105 (refused in prod)
#: ``MM_REDIS_URL`` schemes of a Redis Cluster (the second with TLS).
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
#: Users' hash tags on a cluster unless ``MM_REDIS_USER_SLOTS`` says otherwise: enough to spread
#: users over 16 shards; one routes script call per tag and tick (common.rediskeys).
CLUSTER_USER_SLOTS = 16


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """A parsed ``redis+cluster://`` URL: the seed nodes and what every connection shares."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool


def cluster_nodes(url: str) -> ClusterURL:
    """Parse ``redis+cluster://[user:password@]host:port[,host:port...][/0]``; raise
    ``ValueError`` saying which part is wrong."""
    scheme, _, rest = url.partition("://")
    if scheme not in ("redis+cluster", "rediss+cluster"):
        raise ValueError(
            f"a cluster URL starts with redis+cluster:// or rediss+cluster://: {url!r}"
        )
    rest, question, query = rest.partition("?")
    if question:
        raise ValueError(f"a cluster URL takes no ?options (got ?{query}); set MM_ settings")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, the URL names /{path}")
    credentials, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = credentials.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if colon else None)
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon or not host or not port:
            raise ValueError(f"each cluster node is host:port, got {item.strip()!r} in {url!r}")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"port {port!r} of cluster node {item.strip()!r} is not 1-65535")
        nodes.append((host.strip("[]"), int(port)))
    return ClusterURL(tuple(nodes), username, password, scheme == "rediss+cluster")


class Settings(BaseSettings):
    """Every tunable of MergeMeet; each field is ``MM_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="MM_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Environment = "development"
    data_dir: Path = Path(".data")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Storage
    database_url: str = "postgresql+asyncpg://mergemeet@127.0.0.1:55432/mergemeet"
    # One Redis (redis://, rediss://, unix://) or a Redis Cluster:
    # redis+cluster://[user:password@]host:port[,host:port...] (rediss+cluster:// for TLS);
    # the hosts are seeds, the client finds every shard from any one of them.
    redis_url: str = "redis://127.0.0.1:56379/0"
    # How many hash tags users' keys are spread over (common.rediskeys): unset, 1 on one Redis
    # and CLUSTER_USER_SLOTS on a cluster. Every process of a deployment must agree: it renames
    # every user key.
    redis_user_slots: Annotated[int | None, Field(ge=1, le=16384)] = None
    db_pool_size: Annotated[int, Field(ge=1, le=200)] = 10

    # Secrets and tokens
    secret_key: str = DEV_SECRET
    jwt_keys_dir: Path | None = None
    jwt_active_kid: str | None = None
    jwt_audience: str = "mergemeet"
    jwt_issuer: str = "mergemeet-api"
    access_token_ttl_s: Annotated[int, Field(ge=30, le=24 * 3600)] = 900
    refresh_token_ttl_s: Annotated[int, Field(ge=300, le=90 * 24 * 3600)] = 30 * 24 * 3600

    # Accounts: passwords, login throttling, mail (issue 5)
    password_hash_threads: Annotated[int, Field(ge=1, le=32)] = 2
    password_hash_wait_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    login_pair_max: Annotated[int, Field(ge=1)] = 10  # per (account, IP) and window
    login_ip_max: Annotated[int, Field(ge=1)] = 100  # per IP and window, any account
    # per account and window, counted only from addresses that never logged in to it
    login_account_max: Annotated[int, Field(ge=1)] = 50
    login_window_s: Annotated[int, Field(ge=1, le=24 * 3600)] = 900
    register_ip_max: Annotated[int, Field(ge=1)] = 30  # per IP and hour
    email_code_ttl_s: Annotated[int, Field(ge=60, le=24 * 3600)] = 900
    email_code_max_attempts: Annotated[int, Field(ge=1, le=20)] = 5
    reset_token_ttl_s: Annotated[int, Field(ge=60, le=24 * 3600)] = 3600
    # How often each API process deletes tokens expired for a day (0: never).
    housekeeping_interval_s: Annotated[float, Field(ge=0, le=7 * 24 * 3600)] = 3600.0
    mail_from: str = "MergeMeet <no-reply@mergemeet.local>"
    smtp_host: str | None = None  # production mail; development writes to data_dir/outbox
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 587
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = True
    smtp_timeout_s: Annotated[float, Field(gt=0, le=120)] = 20.0

    # Profiles and photos (issue 5)
    max_travel_kmh: Annotated[float, Field(gt=0)] = 900.0  # faster location moves are refused
    photo_max_count: Annotated[int, Field(ge=1, le=20)] = 6
    photo_max_bytes: Annotated[int, Field(ge=1024)] = 5 * 1024 * 1024
    photo_max_pixels: Annotated[int, Field(ge=1)] = 50_000_000
    photo_max_side: Annotated[int, Field(ge=64, le=4096)] = 1200
    photo_thumb_side: Annotated[int, Field(ge=32, le=1024)] = 320

    # Discovery, likes and matches (issue 6); ranking weights are points on a 0–100 score
    pass_cooldown_s: Annotated[int, Field(ge=0, le=365 * 24 * 3600)] = 24 * 3600
    daily_like_cap: Annotated[int, Field(ge=1, le=10_000)] = 100
    rank_weight_interests: Annotated[float, Field(ge=0, le=100)] = 50.0
    rank_weight_distance: Annotated[float, Field(ge=0, le=100)] = 20.0
    rank_weight_activity: Annotated[float, Field(ge=0, le=100)] = 20.0
    rank_weight_completeness: Annotated[float, Field(ge=0, le=100)] = 5.0
    rank_weight_trust: Annotated[float, Field(ge=0, le=100)] = 5.0

    # HTTP API
    # Proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs, uvicorn's syntax).
    forwarded_allow_ips: str = "127.0.0.1"
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=1, le=65535)] = 8000
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000", "http://localhost:8000"]
    )

    # Realtime node
    realtime_host: str = "127.0.0.1"
    realtime_port: Annotated[int, Field(ge=0, le=65535)] = 8765
    realtime_public_url: str = "ws://127.0.0.1:8765"
    node_id: str | None = None
    max_frame_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024)] = 64 * 1024
    max_body_chars: Annotated[int, Field(ge=1, le=16_000)] = 4000
    ws_compression: bool = False
    auth_timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    heartbeat_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    reauth_before_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    rate_per_s: Annotated[float, Field(gt=0)] = 20.0
    rate_burst: Annotated[int, Field(ge=1)] = 40
    max_connections_per_user: Annotated[int, Field(ge=1, le=100)] = 10
    outbound_high_water: Annotated[int, Field(ge=1024)] = 1024 * 1024
    batch_max: Annotated[int, Field(ge=1, le=10_000)] = 1000
    # Commits of the batch writer in flight at once (never two of one conversation).
    batch_flushers: Annotated[int, Field(ge=1, le=8)] = 2
    # Longest a small batch waits to fill when sends arrive close together (0: never waits).
    batch_wait_ms: Annotated[float, Field(ge=0, le=5)] = 1.0
    sync_page_size: Annotated[int, Field(ge=1, le=1000)] = 200
    presence_ttl_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    presence_grace_s: Annotated[float, Field(ge=0, le=600)] = 5.0
    # Bound on a SIGTERM drain (close sockets with 1012, flush, settle presence, deregister).
    realtime_drain_s: Annotated[float, Field(gt=0, le=600)] = 20.0
    # Several realtime processes on one port (SO_REUSEPORT); each is its own node.
    realtime_reuse_port: bool = False
    # Length of the listening socket's accept queue (the kernel caps it at net.core.somaxconn).
    # asyncio's default of 100 drops the SYNs of a reconnect storm, which retry 1, 3, 7 s later.
    realtime_listen_backlog: Annotated[int, Field(ge=1, le=65535)] = 4096
    # Bound on every Redis/PostgreSQL call of a realtime node.
    realtime_io_timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    # SO_SNDBUF of each realtime socket; 0 keeps the kernel's autotuning (up to tcp_wmem max).
    realtime_sndbuf_bytes: Annotated[int, Field(ge=0, le=16 * 1024 * 1024)] = 0

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept a comma-separated list, as environment variables are plain strings."""
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("must start with postgresql+asyncpg://")
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str) -> str:
        if value.startswith(CLUSTER_SCHEMES):
            cluster_nodes(value)  # raises ValueError naming what is wrong
        elif not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                "must start with redis://, rediss://, unix:// (one Redis) or "
                "redis+cluster://, rediss+cluster:// (a Redis Cluster)"
            )
        return value

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        """Outside development and test every secret must be real and every key explicit."""
        if self.env in ("development", "test"):
            return self
        if self.secret_key.lower() in PLACEHOLDER_SECRETS or self.secret_key == DEV_SECRET:
            raise ValueError("MM_SECRET_KEY is a placeholder; set a random value in production")
        if len(self.secret_key) < MIN_SECRET_LENGTH:
            raise ValueError(f"MM_SECRET_KEY must be at least {MIN_SECRET_LENGTH} characters")
        if self.jwt_keys_dir is None:
            raise ValueError("MM_JWT_KEYS_DIR must be set in production (no generated keys)")
        if "*" in self.allowed_origins:
            raise ValueError("MM_ALLOWED_ORIGINS may not contain '*' in production")
        return self

    @property
    def is_development(self) -> bool:
        return self.env in ("development", "test")

    @property
    def keys_dir(self) -> Path:
        """Where the JWT key set lives: explicit in production, generated under data_dir in dev."""
        return self.jwt_keys_dir if self.jwt_keys_dir is not None else self.data_dir / "keys"

    @property
    def redis_cluster(self) -> bool:
        """``redis_url`` names a Redis Cluster (the client is ``RedisCluster``)."""
        return self.redis_url.startswith(CLUSTER_SCHEMES)

    @property
    def user_slots(self) -> int:
        """How many hash tags users' keys carry (``common.rediskeys.USER_SLOTS``)."""
        if self.redis_user_slots is not None:
            return self.redis_user_slots
        return CLUSTER_USER_SLOTS if self.redis_cluster else 1

    @property
    def asyncpg_dsn(self) -> str:
        """The same database URL in the form asyncpg itself takes (realtime has no ORM)."""
        return self.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, validated on first use."""
    return Settings()

"""Settings validation: environment parsing and refusal of placeholders outside development."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from common.settings import CLUSTER_USER_SLOTS, DEV_SECRET, Settings, cluster_nodes

REAL_SECRET = "x" * 48


def _production(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "env": "production",
        "secret_key": REAL_SECRET,
        "jwt_keys_dir": Path("/etc/mergemeet/keys"),
        "allowed_origins": ["https://app.example"],
    } | overrides
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_development_defaults_are_accepted() -> None:
    settings = Settings(_env_file=None, env="development")
    assert settings.secret_key == DEV_SECRET
    assert settings.keys_dir == settings.data_dir / "keys"


def test_production_with_real_values_is_accepted() -> None:
    settings = _production()
    assert settings.keys_dir == Path("/etc/mergemeet/keys")
    assert not settings.is_development


@pytest.mark.parametrize("secret", ["", "change-me", "secret", DEV_SECRET, "short-but-real"])
def test_production_refuses_placeholder_or_short_secret(secret: str) -> None:
    with pytest.raises(ValidationError, match="MM_SECRET_KEY"):
        _production(secret_key=secret)


def test_production_refuses_generated_keys() -> None:
    with pytest.raises(ValidationError, match="MM_JWT_KEYS_DIR"):
        _production(jwt_keys_dir=None)


def test_production_refuses_wildcard_origin() -> None:
    with pytest.raises(ValidationError, match="MM_ALLOWED_ORIGINS"):
        _production(allowed_origins=["*"])


def test_environment_variables_are_read_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_REALTIME_PORT", "9001")
    monkeypatch.setenv("MM_ALLOWED_ORIGINS", "https://a.example, https://b.example")
    settings = Settings(_env_file=None)
    assert settings.realtime_port == 9001
    assert settings.allowed_origins == ["https://a.example", "https://b.example"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MM_REALTIME_PORT", "not-a-port"),
        ("MM_REALTIME_PORT", "70000"),
        ("MM_DATABASE_URL", "mysql://root@localhost/x"),
        ("MM_REDIS_URL", "http://localhost"),
        ("MM_ENV", "staging"),
        ("MM_MAX_FRAME_BYTES", "10"),
    ],
)
def test_bad_environment_values_are_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as excinfo:
        Settings(_env_file=None)
    field = name.removeprefix("MM_").lower()
    assert field in str(excinfo.value)


def test_a_cluster_url_names_its_seeds_and_spreads_users_over_more_tags() -> None:
    url = "redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001/0"
    settings = Settings(_env_file=None, redis_url=url)
    assert settings.redis_cluster and settings.user_slots == CLUSTER_USER_SLOTS > 1
    parsed = cluster_nodes(url)
    assert parsed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert (parsed.username, parsed.password, parsed.tls) == ("app", "p@ss", False)
    assert cluster_nodes("rediss+cluster://h:1").tls
    single = Settings(_env_file=None, redis_url="redis://127.0.0.1:6379/0")
    assert not single.redis_cluster and single.user_slots == 1
    both = Settings(_env_file=None, redis_url=url, redis_user_slots=4)
    assert both.user_slots == 4


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "each cluster node is host:port, got ''"),
        ("redis+cluster://h1:7000,h2", "each cluster node is host:port, got 'h2'"),
        ("redis+cluster://h1:port", "port 'port' of cluster node 'h1:port' is not 1-65535"),
        ("redis+cluster://h1:70000", "port '70000' of cluster node 'h1:70000' is not 1-65535"),
        ("redis+cluster://h1:7000/1", "a Redis Cluster has only database 0, the URL names /1"),
        ("redis+cluster://h1:7000?x=1", "a cluster URL takes no ?options"),
        ("cluster://h1:7000", "must start with redis://, rediss://, unix://"),
    ],
)
def test_a_bad_redis_url_is_refused_saying_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None, redis_url=url)
    assert "redis_url" in str(raised.value) and message in str(raised.value)

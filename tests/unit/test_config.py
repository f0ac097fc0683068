"""Settings from the environment: defaults, validation, and the secret key's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from giftcard.config import ConfigError, load_settings, parse_duration_s

KEY = "k" * 48


def test_defaults_match_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing set, the abuse limits are SPEC §8's and the database is a local SQLite file."""
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.database_url == "sqlite:///giftcard.db"
    assert settings.limit_redeem_failures_account == "10/15minutes"
    assert settings.limit_redeem_failures_address == "50/15minutes"
    assert settings.limit_signups_address == "20/hour"
    assert settings.limit_login_failures_account == "10/15minutes"
    assert settings.limit_login_failures_address == "100/15minutes"
    assert settings.redis_url is None
    assert settings.demo_store is False


def test_secret_key_is_generated_beside_sqlite_once(tmp_path: Path) -> None:
    """Without a key, development on SQLite gets one in a file beside the database, reused."""
    url = f"sqlite:///{tmp_path}/shop.db"
    first = load_settings({"GIFTCARD_DATABASE_URL": url}).secret_key
    second = load_settings({"GIFTCARD_DATABASE_URL": url}).secret_key
    assert first == second
    assert len(first) >= 32
    key_file = tmp_path / "shop.db.secret"
    assert key_file.read_text().strip().encode() == first
    assert key_file.stat().st_mode & 0o077 == 0


def test_postgres_without_secret_key_is_refused() -> None:
    """PostgreSQL is production: starting without GIFTCARD_SECRET_KEY is an error."""
    with pytest.raises(ConfigError, match="GIFTCARD_SECRET_KEY is required"):
        load_settings({"GIFTCARD_DATABASE_URL": "postgresql://db/giftcard"})


def test_short_secret_key_is_refused() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        load_settings({"GIFTCARD_SECRET_KEY": "short"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GIFTCARD_LIMIT_REDEEM_FAILURES_ACCOUNT", "ten per minute"),
        ("GIFTCARD_LIMIT_SIGNUPS_ADDRESS", "5/fortnight"),
        ("GIFTCARD_LIMIT_REDEEM_MISSES_SERVICE", "400"),
        ("GIFTCARD_SESSION_TTL", "-5"),
        ("GIFTCARD_SESSION_TTL", "1w"),
        ("GIFTCARD_REQUEST_BODY_MAX_BYTES", "12"),
        ("GIFTCARD_DATABASE_POOL_SIZE", "zero"),
        ("GIFTCARD_DATABASE_URL", "mysql://db"),
        ("GIFTCARD_LOG_FORMAT", "xml"),
        ("GIFTCARD_DEMO_STORE", "maybe"),
    ],
)
def test_malformed_settings_name_the_variable(name: str, value: str) -> None:
    """A malformed setting stops start-up with a message naming the variable."""
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value, "GIFTCARD_SECRET_KEY": KEY})


@pytest.mark.parametrize(
    ("text", "on"), [("true", True), (" TRUE ", True), ("1", True), ("false", False), ("", False)]
)
def test_the_demo_store_is_served_only_when_asked_for(text: str, on: bool) -> None:
    settings = load_settings({"GIFTCARD_DEMO_STORE": text, "GIFTCARD_SECRET_KEY": KEY})
    assert settings.demo_store is on


def test_limits_notation_is_accepted() -> None:
    settings = load_settings(
        {"GIFTCARD_LIMIT_REDEEM_FAILURES_ACCOUNT": "3/minute", "GIFTCARD_SECRET_KEY": KEY}
    )
    assert settings.limit_redeem_failures_account == "3/minute"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("7d", 604800)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration_s("X", text) == seconds

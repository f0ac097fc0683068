"""What `giftcard serve` tells an operator whose PostgreSQL leaves its tables' statistics
to go stale (giftcard.db.upkeep); the real server's settings are read in
tests/e2e/test_operator_first_hour.py."""

from __future__ import annotations

import logging

import pytest

from giftcard import cli
from giftcard.config import load_settings
from giftcard.db import upkeep
from tests.conftest import TEST_SECRET_KEY


def test_a_server_that_keeps_its_statistics_is_told_nothing() -> None:
    assert upkeep.warnings({"autovacuum": "on", "track_counts": "on"}) == []


def test_autovacuum_off_is_named_with_what_to_do_instead() -> None:
    (said,) = upkeep.warnings({"autovacuum": "off", "track_counts": "on"})
    assert said.startswith("PostgreSQL runs with autovacuum off: ")
    assert "ANALYZE" in said


def test_statistics_not_counted_is_named_too() -> None:
    """Without track_counts autovacuum has nothing to go by, on or not."""
    said = upkeep.warnings({"autovacuum": "off", "track_counts": "off"})
    assert [line.split(":")[0] for line in said] == [
        "PostgreSQL runs with autovacuum off",
        "PostgreSQL runs with track_counts off",
    ]


def test_a_check_that_fails_is_logged_and_serving_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def unreadable(database_url: str) -> list[str]:
        raise OSError("connection reset")

    monkeypatch.setattr(upkeep, "check", unreadable)
    settings = load_settings(
        {"GIFTCARD_DATABASE_URL": "sqlite://", "GIFTCARD_SECRET_KEY": TEST_SECRET_KEY.decode()}
    )
    with caplog.at_level(logging.WARNING, logger="giftcard.cli"):
        cli._warn_of_missing_upkeep(settings)
    assert [record.getMessage() for record in caplog.records] == [
        "could not read the database server's settings: connection reset"
    ]

"""`cards issue --expires DAY`: the card is good through the whole of DAY in UTC. The
database keeps the moment it ends; the CSV says the day, as a printed card should."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
import typer

from giftcard.cli import _expiry, last_valid_day

TODAY = date(2026, 12, 2)


def test_a_day_is_good_through_its_end_in_utc() -> None:
    expires_at = _expiry("2027-12-31", today=TODAY)

    assert expires_at == datetime(2028, 1, 1, tzinfo=UTC)
    assert last_valid_day(expires_at) == date(2027, 12, 31)


def test_today_is_accepted_and_yesterday_refused() -> None:
    assert _expiry("2026-12-02", today=TODAY) == datetime(2026, 12, 3, tzinfo=UTC)
    with pytest.raises(typer.Exit):
        _expiry("2026-12-01", today=TODAY)
    with pytest.raises(typer.Exit):
        _expiry("31/12/2027", today=TODAY)


def test_a_moment_set_through_the_api_is_good_through_its_own_day() -> None:
    assert last_valid_day(datetime(2027, 6, 30, 15, 0, tzinfo=UTC)) == date(2027, 6, 30)
    assert last_valid_day(datetime(2027, 7, 1, 0, 0, tzinfo=UTC)) == date(2027, 6, 30)

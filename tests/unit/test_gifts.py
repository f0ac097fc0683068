"""The pure checks of a gift request: the delivery time, names, the message, the amount
limits per store, and a date in the demo store's form turned into 09:00 in a zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from giftcard import gifts
from giftcard.demo.gift_pages import deliver_at
from giftcard.errors import GiftcardError
from giftcard.money import REGIONS, check_gift_amount, gift_amount_range

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def refusal(call: object, *args: object, **kwargs: object) -> GiftcardError:
    with pytest.raises(GiftcardError) as caught:
        call(*args, **kwargs)  # type: ignore[operator]
    return caught.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-24T09:00:00+01:00", datetime(2026, 12, 24, 8, tzinfo=UTC)),
        ("2026-12-24T08:00:00Z", datetime(2026, 12, 24, 8, tzinfo=UTC)),
        (" 2026-12-24T03:00:00-05:00 ", datetime(2026, 12, 24, 8, tzinfo=UTC)),
    ],
)
def test_deliver_at_reads_any_zone(text: str, expected: datetime) -> None:
    assert gifts.parse_deliver_at(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("2026-12-24T09:00:00", "Add a time zone"),
        ("2026-12-24", "Add a time zone"),
        ("next tuesday", "ISO 8601"),
        ("2026-02-30T09:00:00Z", "ISO 8601"),
        ("9" * 65, "ISO 8601"),
    ],
)
def test_deliver_at_without_a_zone_or_shape_is_refused(text: str, words: str) -> None:
    error = refusal(gifts.parse_deliver_at, text)
    assert error.param == "deliver_at"
    assert words in error.detail


def request(**fields: object) -> gifts.GiftRequest:
    base: dict[str, object] = {
        "amount": 2500,
        "region": "US",
        "recipient_email": "Sam@Example.COM",
        "sender_name": "  Alex  ",
    }
    return gifts.GiftRequest(**{**base, **fields})  # type: ignore[arg-type]


def test_a_request_is_normalized() -> None:
    checked = gifts.check_request(request(recipient_name="  ", message="  Hi\r\nthere \r "), NOW)
    assert checked.recipient_email == "Sam@example.com"
    assert checked.sender_name == "Alex"
    assert checked.recipient_name is None
    assert checked.message == "Hi\nthere"
    assert checked.deliver_at == NOW


@pytest.mark.parametrize(
    ("moment", "accepted"),
    [
        (NOW - timedelta(seconds=60), True),
        (NOW - timedelta(seconds=61), False),
        (NOW + timedelta(days=365), True),
        (NOW + timedelta(days=365, seconds=1), False),
    ],
)
def test_delivery_time_edges(moment: datetime, accepted: bool) -> None:
    if accepted:
        assert gifts.check_request(request(deliver_at=moment), NOW).deliver_at == moment
    else:
        assert refusal(gifts.check_request, request(deliver_at=moment), NOW).param == "deliver_at"


@pytest.mark.parametrize(
    "name",
    [
        "Alex\nBcc: x@example.com",
        "Alex\rBcc: x",
        "Alex\x00",
        "Alex\u2028x",
        "Alex\u202eevil",
        "x" * 201,
    ],
)
def test_names_are_one_short_line(name: str) -> None:
    assert refusal(gifts.check_request, request(sender_name=name), NOW).param == "sender_name"
    assert refusal(gifts.check_request, request(recipient_name=name), NOW).param == "recipient_name"


def test_names_keep_what_people_write() -> None:
    for name in ("Zoë Ångström", "山田 太郎", "Alex 👨‍👩‍👧", "x" * 200):
        assert gifts.check_name(name, "sender_name", required=True) == name


def test_messages_keep_lines_but_not_control_characters() -> None:
    assert gifts.check_message("a\n\tb") == "a\n\tb"
    assert gifts.check_message("x" * 1000) == "x" * 1000
    assert refusal(gifts.check_message, "x" * 1001).param == "message"
    assert refusal(gifts.check_message, "bell \x07").param == "message"


@pytest.mark.parametrize("code", list(REGIONS))
def test_each_store_s_gift_limits_are_inclusive(code: str) -> None:
    store = REGIONS[code]
    smallest, largest = gift_amount_range(store)
    check_gift_amount(smallest, store)
    check_gift_amount(largest, store)
    for amount in (smallest - 1, largest + 1):
        error = refusal(check_gift_amount, amount, store)
        assert error.param == "amount"
        assert store.store_name in error.detail


def test_the_demo_form_s_day_is_nine_in_the_morning_there() -> None:
    later = {"when": "later", "send_on": "2026-12-24", "time_zone": "America/Los_Angeles"}
    assert deliver_at(later, "US", NOW) == datetime(
        2026, 12, 24, 9, tzinfo=ZoneInfo("America/Los_Angeles")
    )
    assert deliver_at({"when": "now"}, "US", NOW) is None
    # Today, once 09:00 has passed there, means now.
    today = {"when": "later", "send_on": "2026-12-02", "time_zone": "America/New_York"}
    assert deliver_at(today, "US", NOW + timedelta(hours=3)) is None
    assert deliver_at(today, "US", NOW) == datetime(2026, 12, 2, 14, tzinfo=UTC)
    assert refusal(deliver_at, {**today, "send_on": "2026-12-01"}, "US", NOW).param == "send_on"
    assert refusal(deliver_at, {**later, "time_zone": "Europe/Paris"}, "US", NOW).param == (
        "time_zone"
    )


def test_recipient_addresses_are_kept_in_ascii() -> None:
    assert gifts.check_recipient_email(" Sam@Example.COM ") == "Sam@example.com"
    assert gifts.check_recipient_email("sam@bücher.de") == "sam@xn--bcher-kva.de"
    for refused in ("jösé@example.com", "Sam <sam@example.com>", "sam@example.com\r\nBcc: x@y.z"):
        assert refusal(gifts.check_recipient_email, refused).param == "recipient_email"

"""Log lines carry the facts passed with them, in JSON or in text."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from giftcard.logs import JsonFormatter, TextFormatter


def record() -> logging.LogRecord:
    entry = logging.LogRecord("giftcard.access", logging.INFO, __file__, 1, "request", (), None)
    entry.__dict__.update({"method": "POST", "status": 201, "color_message": "\x1b[1m"})
    return entry


def test_json_lines_hold_the_extra_fields() -> None:
    line = json.loads(JsonFormatter().format(record()))
    assert line["message"] == "request"
    assert line["method"] == "POST"
    assert line["status"] == 201
    assert line["level"] == "info"
    assert "color_message" not in line


def test_text_lines_hold_the_extra_fields() -> None:
    line = TextFormatter().format(record())
    assert line.endswith("INFO giftcard.access request method=POST status=201")


def test_json_lines_give_each_record_its_own_time_in_utc_to_the_millisecond() -> None:
    formatter = JsonFormatter()
    # One moment, then one in the same second, then one in another second: the second
    # written for the first must not be reused for the last.
    for created in (1_796_000_000.25, 1_796_000_000.999, 1_796_000_061.0625, 1_796_000_000.5):
        entry = record()
        entry.created = created
        entry.msecs = (created - int(created)) * 1000
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert json.loads(formatter.format(entry))["time"] == expected

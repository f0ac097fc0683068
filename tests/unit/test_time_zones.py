"""Every store's time zone resolves without the system's zoneinfo files (slim images have
none): the `tzdata` package the project depends on carries them."""

from __future__ import annotations

import os
import subprocess
import sys

from giftcard.web.templating import STORE_TIME_ZONES

_READ_EVERY_ZONE = """
from datetime import datetime, UTC
from zoneinfo import ZoneInfo, TZPATH
from giftcard.web.templating import STORE_TIME_ZONES
assert TZPATH == (), TZPATH
for name in STORE_TIME_ZONES.values():
    print(name, datetime(2026, 7, 1, 12, tzinfo=UTC).astimezone(ZoneInfo(name)).utcoffset())
"""


def test_every_store_zone_resolves_without_system_zoneinfo() -> None:
    env = {**os.environ, "PYTHONTZPATH": ""}  # no system folders to look in
    done = subprocess.run(
        [sys.executable, "-c", _READ_EVERY_ZONE], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    offsets = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert offsets.keys() == set(STORE_TIME_ZONES.values())
    assert offsets["Asia/Kolkata"] == "5:30:00"
    assert offsets["Europe/Berlin"] == "2:00:00"  # summer time, from the zone's rules

"""Where `giftcard serve` says links in emails point when GIFTCARD_PUBLIC_URL is unset:
the address a browser on the same machine reaches it at."""

from __future__ import annotations

import pytest

from giftcard.cli import listening_url


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 8001, "http://127.0.0.1:8001"),
        ("::", 8002, "http://[::1]:8002"),
        ("::1", 8003, "http://[::1]:8003"),
        ("192.0.2.7", 80, "http://192.0.2.7:80"),
        ("gifts.internal", 8004, "http://gifts.internal:8004"),
    ],
)
def test_a_wildcard_address_is_reached_at_the_loopback_one(host: str, port: int, url: str) -> None:
    assert listening_url(host, port) == url

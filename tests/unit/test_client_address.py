"""The address the abuse limits count: an IPv4 address as it is, an IPv6 one by its /64,
so that one subscriber cannot rotate through its own block to escape them."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from giftcard.http import client_address


def _from(host: str | None) -> Request:
    client = None if host is None else (host, 51515)
    return Request({"type": "http", "method": "GET", "path": "/", "headers": [], "client": client})


@pytest.mark.parametrize(
    ("host", "counted"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("127.0.0.2", "127.0.0.2"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2:0:0:0:9", "2001:db8:1:2::/64"),
        ("::1", "::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_each_address_is_counted_by_what_one_subscriber_holds(
    host: str | None, counted: str
) -> None:
    assert client_address(_from(host)) == counted


def test_two_networks_are_two_addresses() -> None:
    assert client_address(_from("2001:db8:1:2::1")) != client_address(_from("2001:db8:1:3::1"))

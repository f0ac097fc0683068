"""Which proxies `giftcard serve` believes about the client's address and scheme: none
unless GIFTCARD_FORWARDED_ALLOW_IPS names them."""

from __future__ import annotations

import pytest

from giftcard.cli import proxy_options
from giftcard.config import ConfigError


@pytest.mark.parametrize(
    "environ", [{}, {"GIFTCARD_FORWARDED_ALLOW_IPS": ""}, {"GIFTCARD_FORWARDED_ALLOW_IPS": "  "}]
)
def test_no_proxy_is_trusted_by_default(environ: dict[str, str]) -> None:
    """Unset or empty: uvicorn does not read X-Forwarded-* headers at all, so it does not
    fall back to its own default of trusting 127.0.0.1 either."""
    assert proxy_options(environ) == {"proxy_headers": False}


@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        ("10.0.0.5", "10.0.0.5"),
        (" 10.0.0.5 , 192.168.0.0/16 ", "10.0.0.5,192.168.0.0/16"),
        ("::1,fd00::/8", "::1,fd00::/8"),
        ("*", "*"),
    ],
)
def test_named_proxies_are_trusted_and_only_they(value: str, trusted: str) -> None:
    assert proxy_options({"GIFTCARD_FORWARDED_ALLOW_IPS": value}) == {
        "proxy_headers": True,
        "forwarded_allow_ips": trusted,
    }


@pytest.mark.parametrize("value", ["proxy.internal", "10.0.0.5,", "10.0.0.300", "*,10.0.0.5"])
def test_a_malformed_value_is_refused_naming_the_variable(value: str) -> None:
    """A host name, an empty entry, an impossible address, or `*` beside addresses (which
    would quietly trust no one, or everyone) stops the server with a clear message."""
    with pytest.raises(ConfigError, match="GIFTCARD_FORWARDED_ALLOW_IPS"):
        proxy_options({"GIFTCARD_FORWARDED_ALLOW_IPS": value})

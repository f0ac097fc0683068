"""A real server believes `X-Forwarded-For` and `X-Forwarded-Proto` only from the
proxies GIFTCARD_FORWARDED_ALLOW_IPS names: by default a client cannot choose the
address its requests are counted against, nor pass for HTTPS."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import HTTP_TIMEOUT_S, base_env, running_server

pytestmark = pytest.mark.e2e

FORGED_ADDRESS = "198.51.100.7"


def access_log_clients(log_path: Path, path: str) -> list[str]:
    """The client address the access log recorded for each request to `path`."""
    clients = []
    for line in log_path.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("message") == "request" and entry.get("path") == path:
            clients.append(entry["client"])
    return clients


@pytest.mark.parametrize(
    ("trusted", "believed"), [(None, False), ("127.0.0.1", True), ("10.0.0.0/8", False)]
)
def test_forwarded_headers_are_believed_only_from_a_trusted_proxy(
    tmp_path: Path, trusted: str | None, believed: bool
) -> None:
    """Given a server with no trusted proxy, or trusting this test's address, or only
    another network, when a request from 127.0.0.1 claims another address and HTTPS,
    then the access log and the page's cookies show the claim believed only when
    127.0.0.1 is trusted."""
    overrides = {"GIFTCARD_FORWARDED_ALLOW_IPS": trusted} if trusted else {}
    env = base_env(f"sqlite:///{tmp_path / 'giftcard.db'}", **overrides)
    log_path = tmp_path / "server.log"
    with running_server(env, log_path, workers=1) as server:
        home = httpx.get(
            f"{server.base_url}/",
            headers={"X-Forwarded-For": FORGED_ADDRESS, "X-Forwarded-Proto": "https"},
            timeout=HTTP_TIMEOUT_S,
        )
    # Read once the server has stopped, so that every line is written.
    clients = access_log_clients(log_path, "/")

    assert home.status_code == 200
    assert clients == [FORGED_ADDRESS if believed else "127.0.0.1"]
    csrf_cookie = home.headers["set-cookie"]
    assert csrf_cookie.startswith("giftcard_csrf=")
    assert ("secure" in csrf_cookie.lower()) is believed

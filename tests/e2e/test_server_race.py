"""Fifty redemptions of one code over real HTTP, against a real server with two worker
processes (SPEC §9): exactly one is credited, and `giftcard verify` agrees afterwards.

In-process tests race coroutines on one event loop; here the requests race across
processes, sockets and database connections, as they would in production.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.server import base_env, create_api_key, run_cli, running_server, sign_up_shopper

pytestmark = pytest.mark.e2e

CONCURRENCY = 50
REQUEST_TIMEOUT_S = 60
BURST_TIMEOUT_S = 120


async def test_fifty_redemptions_of_one_code_over_http_credit_it_once(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given a real server (2 workers) and one issued code, when one shopper sends 50
    redemptions of it at once over HTTP, then exactly one gets 201, the other 49 get
    code_already_redeemed, the balance is the face value, and `giftcard verify` exits 0."""
    env = base_env(
        server_database_url,
        # The race is about the ledger: lock-outs would turn refusals into 429s.
        GIFTCARD_LIMIT_REDEEM_FAILURES_ACCOUNT="10000/15minutes",
        GIFTCARD_LIMIT_REDEEM_FAILURES_ADDRESS="10000/15minutes",
        GIFTCARD_LIMIT_REDEEM_MISSES_SERVICE="10000/15minutes",
        GIFTCARD_DATABASE_POOL_SIZE="25",
    )
    with running_server(env, tmp_path / "server.log") as server:
        admin = create_api_key(env)
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(
            base_url=server.base_url, timeout=REQUEST_TIMEOUT_S, limits=limits
        ) as http:
            issued = await http.post(
                "/v1/cards", json={"amount": 2500, "region": "US", "kind": "digital"}, headers=admin
            )
            assert issued.status_code == 201, issued.text
            code = issued.json()["data"][0]["code"]
            auth = (await sign_up_shopper(http, "racer@example.com")).auth

            responses = await asyncio.wait_for(
                asyncio.gather(
                    *(
                        http.post("/v1/me/redemptions", json={"code": code}, headers=auth)
                        for _ in range(CONCURRENCY)
                    )
                ),
                BURST_TIMEOUT_S,
            )

            outcomes = Counter(
                (r.status_code, r.json().get("code") if r.status_code >= 400 else None)
                for r in responses
            )
            assert outcomes == {
                (201, None): 1,
                (409, "code_already_redeemed"): CONCURRENCY - 1,
            }, server.log_tail()
            balance = await http.get("/v1/me/balance", headers=auth)
            assert balance.json() == {
                "currency": "USD",
                "available": 2500,
                "held": 0,
                "total": 2500,
            }

    verified = run_cli(env, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "OK: every invariant holds." in verified.stdout

"""The abuse limits are exact across worker processes (SPEC §8): forty wrong codes sent at
once by one account to a real server with two workers get exactly ten refusals on their
merits and thirty 429s, whether the limits are counted in the database or in Redis.

Before the limits were shared, each worker counted its own refusals, so an account got
ten per worker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
import redis.asyncio as redis

from giftcard.codes import generate_code
from tests.e2e.server import base_env, running_server, sign_up_shopper

pytestmark = pytest.mark.e2e

GUESSES = 40
REFUSALS_ALLOWED = 10
REQUEST_TIMEOUT_S = 60
BURST_TIMEOUT_S = 120


@pytest.fixture(params=["database", "redis"])
def limits_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Where the server counts the limits; a key prefix of the test's own in Redis."""
    if request.param == "database":
        return {}
    redis_url: str = request.getfixturevalue("redis_url")
    return {
        "GIFTCARD_REDIS_URL": redis_url,
        "GIFTCARD_LIMIT_KEY_PREFIX": f"giftcard-e2e-{uuid.uuid4().hex}",
    }


async def _forget_keys(env: dict[str, str]) -> None:
    if "GIFTCARD_REDIS_URL" not in env:
        return
    client = redis.Redis.from_url(env["GIFTCARD_REDIS_URL"])
    try:
        pattern = "{" + env["GIFTCARD_LIMIT_KEY_PREFIX"] + "}:*"
        keys = [key async for key in client.scan_iter(match=pattern)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_forty_guesses_at_once_get_exactly_ten_refusals_across_workers(
    server_database_url: str, limits_env: dict[str, str], tmp_path: Path
) -> None:
    """Given a real server with 2 workers and the default limit of 10 refused redemptions
    per account, when one shopper sends 40 unknown codes at once over HTTP, then exactly
    10 are answered code_not_found and 30 too_many_attempts, each with Retry-After."""
    env = base_env(server_database_url, GIFTCARD_DATABASE_POOL_SIZE="25", **limits_env)
    try:
        with running_server(env, tmp_path / "server.log", workers=2) as server:
            limits = httpx.Limits(max_connections=GUESSES, max_keepalive_connections=GUESSES)
            async with httpx.AsyncClient(
                base_url=server.base_url, timeout=REQUEST_TIMEOUT_S, limits=limits
            ) as http:
                auth = (await sign_up_shopper(http, "guesser@example.com")).auth

                responses = await asyncio.wait_for(
                    asyncio.gather(
                        *(
                            http.post(
                                "/v1/me/redemptions", json={"code": generate_code()}, headers=auth
                            )
                            for _ in range(GUESSES)
                        )
                    ),
                    BURST_TIMEOUT_S,
                )

            outcomes = Counter((r.status_code, r.json().get("code")) for r in responses)
            assert outcomes == {
                (404, "code_not_found"): REFUSALS_ALLOWED,
                (429, "too_many_attempts"): GUESSES - REFUSALS_ALLOWED,
            }, server.log_tail()
            for response in responses:
                if response.status_code == 429:
                    assert 1 <= int(response.headers["retry-after"]) <= 15 * 60
    finally:
        await _forget_keys(env)

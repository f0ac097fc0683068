"""Liveness, readiness, metrics and the home page."""

from __future__ import annotations

import gc

import httpx
import pytest
from fastapi import FastAPI

from giftcard.api.app import YOUNG_COLLECTION_THRESHOLD, create_app
from giftcard.codes import generate_code
from giftcard.config import Settings
from giftcard.db.engine import Database
from giftcard.services import Services
from tests.conftest import api_key, assert_problem, issue, sign_up


def counter(metrics: str, outcome: str) -> float:
    prefix = f'giftcard_redemptions_total{{outcome="{outcome}"}} '
    for line in metrics.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return 0.0


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ok"}


async def test_not_ready_when_the_database_does_not_answer(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Given a database that cannot be reached, /readyz is a 503 problem while /healthz
    still says the process is alive."""
    working = services.db
    services.db = Database("postgresql://nobody@127.0.0.1:1/none", pool_size=1)
    try:
        response = await client.get("/readyz")
        assert_problem(response, 503, "service_unavailable")
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await services.db.dispose()
        services.db = working


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_metrics_count_redemptions_by_outcome(
    client: httpx.AsyncClient, services: Services
) -> None:
    """Each redemption attempt is counted under its outcome: redeemed or its error code."""
    before = (await client.get("/metrics")).text
    admin = await api_key(services)
    [card] = await issue(client, admin)
    shopper = await sign_up(client)
    await client.post("/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth)
    await client.post("/v1/me/redemptions", json={"code": card["code"]}, headers=shopper.auth)
    await client.post("/v1/me/redemptions", json={"code": generate_code()}, headers=shopper.auth)

    response = await client.get("/metrics")

    assert response.headers["content-type"].startswith("text/plain")
    after = response.text
    assert counter(after, "redeemed") - counter(before, "redeemed") == 1
    assert counter(after, "code_already_redeemed") - counter(before, "code_already_redeemed") == 1
    assert counter(after, "code_not_found") - counter(before, "code_not_found") == 1
    assert "giftcard_http_request_duration_seconds_bucket" in after


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_home_page_links_to_the_docs(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in response.text


async def test_a_serving_app_sets_what_it_built_aside_from_full_collections(
    settings: Settings, services: Services
) -> None:
    """An app that builds its own services (as `giftcard serve` does) has the garbage
    collector set aside what exists once it has started, so that full collections under
    load walk only what requests made since, and collects its youngest objects less
    often; when it stops it gives both back. An app handed its services (as tests do)
    leaves the collector alone."""
    gc.unfreeze()  # what an app of another test, still running, would have set aside
    before = gc.get_threshold()
    assert before[0] < YOUNG_COLLECTION_THRESHOLD
    serving = create_app(settings)
    async with serving.router.lifespan_context(serving), _client(serving) as http:
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *before[1:])
        assert (await http.get("/healthz")).status_code == 200
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    handed = create_app(services=services)
    async with handed.router.lifespan_context(handed):
        assert gc.get_freeze_count() == 0
        assert gc.get_threshold() == before


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")

"""The console's records pages, used as a browser would: the audit log (/support/audit-log)
with its filters, its pager and its CSV download, and the liability report
(/support/report) with its reconciliation in words and its chart."""

from __future__ import annotations

import csv
import html
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from giftcard import audit, ids
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.services import Services
from tests.conftest import api_key, issue, sign_up
from tests.web import console_log_in, field_error, text_of

AGENT = audit.Actor("staff:41", "support", "req_console")


@pytest.fixture
async def browser(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.31", 4900))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"Accept": "text/html"}
    ) as http:
        yield http


async def record(
    services: Services,
    action: str,
    target: str | None,
    *,
    actor: audit.Actor = AGENT,
    reason: str | None = None,
    note: str | None = None,
    outcome: str = "ok",
) -> None:
    async def work(connection: AsyncConnection) -> None:
        await audit.record(
            connection,
            actor,
            audit.Action(action, target=target, reason=reason, note=note, outcome=outcome),
            now=services.clock.now(),
        )

    await services.db.run(work)


def rows_of(page: str) -> list[str]:
    """Each row of the page's first data table body, as its words."""
    body = re.search(r"<tbody>(.*?)</tbody>", page, re.S)
    assert body, "no table on the page"
    return [text_of(row) for row in re.findall(r"<tr>(.*?)</tr>", body.group(1), re.S)]


def link(page: str, words: str) -> str:
    found = re.search(rf'<a href="([^"]*)"[^>]*>{re.escape(words)}</a>', page)
    assert found, f"no link {words!r}"
    return html.unescape(found.group(1))


def assert_passes_the_csp(page: str) -> None:
    """Nothing the Content-Security-Policy would block: no inline style or script."""
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"<style\b", page)
    assert not re.search(r"\son[a-z]+=", page)
    assert len(re.findall(r"<script\b", page)) == len(re.findall(r"<script\b[^>]*\bsrc=", page))


async def test_the_pages_need_a_staff_member(browser: httpx.AsyncClient) -> None:
    for path in ("/support/audit-log", "/support/audit-log/export", "/support/report"):
        response = await browser.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/support/login?next=/support/")


async def test_the_log_shows_who_did_what_with_links_to_cards_and_customers(
    browser: httpx.AsyncClient, services: Services
) -> None:
    await record(services, "card.freeze", "card_12", reason="lost", note="called at 9")
    await record(services, "customer.view", "cus_3")
    await record(services, "adjustment.approve", "adj_4", outcome="invalid_state")
    await console_log_in(browser, services)
    page = await browser.get("/support/audit-log")
    assert page.status_code == 200
    assert_passes_the_csp(page.text)
    assert 'aria-current="page">Audit log<' in page.text
    rows = rows_of(page.text)
    assert len(rows) == 3
    assert rows[0].startswith("aud_3")
    assert "adj_4" in rows[0]
    assert "invalid_state" in rows[0]
    assert "staff:41 support card.freeze card_12 lost called at 9 ok req_console" in rows[2]
    assert " UTC " in rows[2]
    # Recorded before ids were enciphered, these targets link to today's ids.
    assert link(page.text, "card_12") == "/support/cards/" + ids.format_id(ids.CARD, 12)
    assert link(page.text, "cus_3") == "/support/customers/" + ids.format_id(ids.CUSTOMER, 3)
    assert '<a href="/support/adjustments' not in page.text
    assert "Older entries" not in page.text
    for name in ("actor", "action", "target", "since", "until"):
        assert re.search(rf'<label for="{name}">', page.text), name


async def test_filters_narrow_the_log_and_bad_ones_are_named_beside_their_field(
    browser: httpx.AsyncClient, services: Services
) -> None:
    await record(services, "card.freeze", "card_1")
    await record(services, "card.lookup", "card_2", actor=audit.Actor("api_key:5", "admin"))
    await record(services, "customer.view", "cus_1")
    await console_log_in(browser, services)
    cards = await browser.get("/support/audit-log", params={"action": "card."})
    assert [row.split()[0] for row in rows_of(cards.text)] == ["aud_2", "aud_1"]
    assert 'value="card."' in cards.text
    key = await browser.get("/support/audit-log", params={"actor": "api_key:5"})
    assert [row.split()[0] for row in rows_of(key.text)] == ["aud_2"]
    none = await browser.get("/support/audit-log", params={"target": "card_99"})
    assert "No entries match these filters." in text_of(none.text)

    bad = await browser.get(
        "/support/audit-log", params={"actor": "ada@example.com", "since": "last week"}
    )
    assert bad.status_code == 422
    assert "stf_…" in (field_error(bad.text, "actor") or "")
    assert "2026-12-01" in (field_error(bad.text, "since") or "")
    assert field_error(bad.text, "action") is None
    assert "<tbody>" not in bad.text
    assert "Download CSV" not in bad.text
    backwards = await browser.get(
        "/support/audit-log", params={"since": "2026-12-02", "until": "2026-12-01"}
    )
    assert "after since" in (field_error(backwards.text, "until") or "")


async def test_the_pager_goes_to_older_entries_and_back(
    browser: httpx.AsyncClient, services: Services
) -> None:
    for index in range(53):
        await record(services, "card.lookup", f"card_{index}")
    await record(services, "customer.view", "cus_1")
    await console_log_in(browser, services)
    first = await browser.get("/support/audit-log", params={"action": "card.lookup"})
    assert len(rows_of(first.text)) == 50
    assert rows_of(first.text)[0].startswith("aud_53")
    older_url = link(first.text, "Older entries")
    assert "action=card.lookup" in older_url
    older = await browser.get(older_url)
    assert [row.split()[0] for row in rows_of(older.text)] == ["aud_3", "aud_2", "aud_1"]
    assert "Older entries" not in older.text
    assert link(older.text, "Newest entries") == "/support/audit-log?action=card.lookup"
    lost = await browser.get("/support/audit-log", params={"starting_after": "nonsense"})
    assert lost.status_code == 422


async def test_the_csv_link_downloads_the_filtered_log_and_is_recorded(
    browser: httpx.AsyncClient, services: Services
) -> None:
    await record(services, "card.freeze", "card_1", note="=1+1")
    await record(services, "customer.view", "cus_1")
    await console_log_in(browser, services)
    page = await browser.get(
        "/support/audit-log", params={"action": "card.", "since": "2000-01-01"}
    )
    download = link(page.text, "Download CSV")
    assert download == "/support/audit-log/export?action=card.&since=2000-01-01"
    response = await browser.get(download)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert response.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(response.text, newline="")))
    assert [(row["id"], row["note"]) for row in rows] == [("aud_1", "'=1+1")]
    log = await browser.get("/support/audit-log", params={"action": "audit_log.export"})
    [entry] = rows_of(log.text)
    assert entry.startswith("aud_3")
    assert "support audit_log.export" in entry
    bad = await browser.get("/support/audit-log/export", params={"until": "soon"})
    assert bad.status_code == 422
    assert field_error(bad.text, "until")


async def test_the_report_states_the_reconciliation_and_draws_the_activity(
    browser: httpx.AsyncClient, client: httpx.AsyncClient, services: Services, clock: FrozenClock
) -> None:
    store = await api_key(services, "admin")
    first, _ = await issue(client, store, amount=2500, count=2)
    await issue(client, store, amount=2000, region="GB")
    shopper = await sign_up(client)
    redeemed = await client.post(
        "/v1/me/redemptions", json={"code": first["code"]}, headers=shopper.auth
    )
    assert redeemed.status_code == 201
    await console_log_in(browser, services, "admin")
    page = await browser.get("/support/report", params={"days": "7"})
    assert page.status_code == 200
    assert_passes_the_csp(page.text)
    words = text_of(page.text)
    assert "USD: Reconciled with the ledger: cards and customer balances come to $50.00" in words
    assert "GBP: Reconciled with the ledger" in words
    assert "Region US (USD)" in words
    assert "Region GB (GBP)" in words
    assert "Active cards, not redeemed 1 $25.00" in words
    assert "Customers' available balances (1 customers) — $25.00" in words
    assert "Outstanding in all — $50.00" in words
    svg = re.search(r"<svg\b.*?</svg>", page.text, re.S)
    assert svg
    root = ET.fromstring(svg.group(0))
    assert root.get("role") == "img"
    assert root.find("{http://www.w3.org/2000/svg}title") is not None
    assert len(root.findall(".//{http://www.w3.org/2000/svg}polyline")) == 10
    today = clock.now().date().isoformat()
    assert "USD: the chart's figures as a table" in words
    assert f"{today} $50.00 $25.00 $0.00 $0.00 $0.00" in words
    assert len(re.findall(r'<th scope="row" class="time">', page.text)) == 14

    async with services.db.transaction() as connection:
        await connection.execute(
            text("UPDATE cards SET amount = 2600 WHERE state = 'active' AND currency = 'USD'")
        )
    tampered = text_of((await browser.get("/support/report")).text)
    assert (
        "USD: Does not reconcile with the ledger: cards and customer balances come to $51.00"
        in tampered
    )
    assert "the ledger's card and customer accounts hold $50.00 (-$1.00 apart)" in tampered
    assert "Run `giftcard verify`" in tampered
    assert "GBP: Reconciled with the ledger" in tampered


async def test_an_empty_report_and_a_bad_number_of_days(
    browser: httpx.AsyncClient, services: Services
) -> None:
    await console_log_in(browser, services)
    empty = await browser.get("/support/report")
    assert empty.status_code == 200
    words = text_of(empty.text)
    assert "Nothing is owed yet" in words
    assert "No activity to show." in words
    for days in ("0", "367", "many", "-3", "00030"):
        bad = await browser.get("/support/report", params={"days": days})
        assert bad.status_code == 422
        assert "from 1 to 366" in (field_error(bad.text, "days") or ""), days

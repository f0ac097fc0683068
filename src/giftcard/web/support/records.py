"""Console pages for the records: the audit log (with its CSV export) and the liability report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from markupsafe import Markup

from giftcard import audit, ids, reports
from giftcard.errors import GiftcardError
from giftcard.http import services
from giftcard.money import currency_exponent
from giftcard.web import security
from giftcard.web.support import chart
from giftcard.web.support.session import HOME, actor, console_page, money, require_staff
from giftcard.web.templating import SECURITY_HEADERS

router = APIRouter(prefix=HOME, include_in_schema=False)

AUDIT_PAGE = HOME + "/audit-log"
AUDIT_EXPORT = AUDIT_PAGE + "/export"
REPORT_PAGE = HOME + "/report"
# Entries on one page of the console's log: a screenful to scan.
CONSOLE_PAGE_SIZE = 50
FILTER_FIELDS = ("actor", "action", "target", "outcome", "since", "until")
# Ids that have a console page of their own.
_LINKED_TARGETS = {ids.CARD: HOME + "/cards/", ids.CUSTOMER: HOME + "/customers/"}
SERIES_LABELS = (
    ("issued", "Issued"),
    ("redeemed", "Redeemed"),
    ("spent", "Spent"),
    ("refunded", "Refunded"),
    ("adjusted", "Adjusted"),
)


def target_link(target: str | None) -> str | None:
    """The console page of an entry's target, when it is a card or a customer."""
    if target is None:
        return None
    for prefix, base in _LINKED_TARGETS.items():
        number = ids.read(prefix, target)
        if number is not None:
            return base + ids.format_id(prefix, number)
    return None


def _typed(params: Mapping[str, str]) -> dict[str, str]:
    """The filters as typed (cut to their length limit), blanks left out."""
    return {
        name: params[name][: audit.FILTER_LENGTH_MAX + 1].strip()
        for name in FILTER_FIELDS
        if params.get(name, "").strip()
    }


def _filters(typed: Mapping[str, str]) -> tuple[audit.Filters | None, dict[str, str]]:
    """The filters, or every field's error (each field is judged on its own first, so
    that all of them are shown at once)."""
    errors: dict[str, str] = {}
    for name, value in typed.items():
        try:
            audit.parse_filters(**{name: value})
        except GiftcardError as error:
            errors[name] = error.detail
    if errors:
        return None, errors
    try:
        return audit.parse_filters(**typed), {}
    except GiftcardError as error:
        return None, {error.param or "since": error.detail}


def _query(values: Mapping[str, str]) -> str:
    return "?" + urlencode(values) if values else ""


@router.get("/audit-log", response_class=HTMLResponse)
async def audit_log(request: Request) -> Response:
    await require_staff(request)
    typed = _typed(request.query_params)
    filters, errors = _filters(typed)
    cursor_text = request.query_params.get("starting_after")
    cursor = None
    if cursor_text:
        try:
            cursor = ids.parse_cursor(ids.AUDIT_ENTRY, cursor_text[:40])
        except GiftcardError:
            errors["starting_after"] = "That page is not one of this log's: start again."
    context: dict[str, Any] = {
        "values": typed,
        "errors": errors,
        "entries": [],
        "has_more": False,
        "filtered": bool(typed),
        "export_url": AUDIT_EXPORT + _query(typed),
        "first_url": AUDIT_PAGE + _query(typed),
        "older_url": None,
        "paged": cursor is not None,
        "target_link": target_link,
    }
    if errors or filters is None:
        return console_page(request, "support/audit_log.html", "audit", context, status=422)
    found = await audit.page(
        services(request).db, filters=filters, limit=CONSOLE_PAGE_SIZE, starting_after=cursor
    )
    context["entries"] = found.items
    context["has_more"] = found.has_more
    if found.has_more:
        context["older_url"] = AUDIT_PAGE + _query(
            {**typed, "starting_after": found.items[-1].public_id}
        )
    return console_page(request, "support/audit_log.html", "audit", context)


@router.get("/audit-log/export", response_class=HTMLResponse)
async def audit_log_export(request: Request) -> Response:
    """The log as CSV with the page's filters, recorded as the agent's export."""
    staff = await require_staff(request)
    typed = _typed(request.query_params)
    filters, errors = _filters(typed)
    if errors or filters is None:
        return await audit_log(request)
    svc = services(request)
    export = await audit.start_export(svc.unit_of_work(), actor(request, staff), filters)
    response = StreamingResponse(
        audit.export_csv(svc.db, export),
        media_type="text/csv; charset=utf-8",
        headers={
            **SECURITY_HEADERS,
            "Content-Disposition": f'attachment; filename="{export.filename}"',
        },
    )
    security.finish(request, response)
    return response


def _days(text: str | None) -> tuple[int, str | None]:
    """The report's number of days, or the default and what is wrong with the one typed."""
    if text is None or not text.strip():
        return reports.DAYS_DEFAULT, None
    words = text.strip()
    # Three digits at most: 366 is the largest, and int() of a long text is not free.
    if len(words) <= 3 and words.isascii() and words.isdigit():
        days = int(words)
        if 1 <= days <= reports.DAYS_MAX:
            return days, None
    return reports.DAYS_DEFAULT, (
        f"Days must be a whole number from 1 to {reports.DAYS_MAX}; showing "
        f"{reports.DAYS_DEFAULT} instead."
    )


def activity_chart(report: reports.LiabilityReport) -> Markup:
    days = [item.day for item in report.activity[0].days] if report.activity else []
    panels = [
        chart.Panel(
            item.currency,
            currency_exponent(item.currency),
            [
                chart.Series(label, [getattr(day, name) for day in item.days])
                for name, label in SERIES_LABELS
            ],
        )
        for item in report.activity
    ]
    currencies = ", ".join(item.currency for item in report.activity) or "no currency"
    svg = chart.activity_chart(
        days,
        panels,
        title=f"Daily activity from {report.first_day} to {report.last_day} (UTC)",
        description=f"Amounts issued, redeemed, spent from balances, refunded to balances "
        f"and adjusted each day, one panel per currency ({currencies}). The same figures "
        "are in the table below the chart.",
        id_prefix="activity-chart",
    )
    # The chart escapes every word it draws.
    return Markup(svg)  # noqa: S704


def reconciliation_words(item: reports.Reconciliation) -> str:
    """The reconciliation of one currency in a sentence."""
    owed = money(item.cards_and_customers, item.currency)
    if item.reconciled:
        return (
            f"Reconciled with the ledger: cards and customer balances come to {owed}, "
            "the same as the ledger's card and customer accounts and as its system accounts."
        )
    parts = [f"Does not reconcile with the ledger: cards and customer balances come to {owed}"]
    if item.difference_tracked:
        parts.append(
            f"the ledger's card and customer accounts hold "
            f"{money(item.ledger_tracked_accounts, item.currency)} "
            f"({money(item.difference_tracked, item.currency)} apart)"
        )
    if item.difference_system:
        parts.append(
            f"its system accounts account for "
            f"{money(item.ledger_system_accounts, item.currency)}, "
            f"{money(item.difference_system, item.currency)} apart from the card and "
            "customer accounts"
        )
    return "; ".join(parts) + ". Run `giftcard verify` to find the rows that disagree."


@router.get("/report", response_class=HTMLResponse)
async def report(request: Request) -> Response:
    await require_staff(request)
    days, error = _days(request.query_params.get("days"))
    svc = services(request)
    found = await reports.liability(svc.db, now=svc.clock.now(), days=days)
    return console_page(
        request,
        "support/report.html",
        "report",
        {
            "report": found,
            "days": days,
            "values": {"days": request.query_params.get("days", str(days))[:10]},
            "errors": {"days": error} if error else {},
            "chart": activity_chart(found),
            "series": SERIES_LABELS,
            "reconciliation_words": reconciliation_words,
        },
        status=422 if error else 200,
    )

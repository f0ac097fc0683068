"""Reports: the store's outstanding gift card liability, reconciled against the ledger."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from giftcard import reports
from giftcard.api import schemas
from giftcard.api.deps import roles
from giftcard.api.problems import problems
from giftcard.customers import Principal, Role
from giftcard.http import services_dependency
from giftcard.services import Services

router = APIRouter(prefix="/v1", tags=["reports"])
staff = roles(Role.SUPPORT, Role.ADMIN)


def render_report(report: reports.LiabilityReport) -> dict[str, Any]:
    return schemas.LiabilityReportOut(
        generated_at=report.generated_at,
        first_day=report.first_day.isoformat(),
        last_day=report.last_day.isoformat(),
        reconciled=report.reconciled,
        regions=[
            schemas.RegionLiabilityOut(
                region=item.region,
                currency=item.currency,
                outstanding=item.outstanding,
                active_cards=item.active_cards,
                active_value=item.active_value,
                expired_cards=item.expired_cards,
                expired_value=item.expired_value,
                frozen_cards=item.frozen_cards,
                frozen_value=item.frozen_value,
                inactive_cards=item.inactive_cards,
                customers=item.customers,
                customers_available=item.customers_available,
                customers_held=item.customers_held,
                store_credit_given=item.store_credit_given,
                net_adjustments=item.net_adjustments,
            )
            for item in report.regions
        ],
        reconciliation=[
            schemas.ReconciliationOut(
                currency=item.currency,
                cards_and_customers=item.cards_and_customers,
                ledger_tracked_accounts=item.ledger_tracked_accounts,
                ledger_system_accounts=item.ledger_system_accounts,
                difference_tracked=item.difference_tracked,
                difference_system=item.difference_system,
                reconciled=item.reconciled,
            )
            for item in report.reconciliations
        ],
        activity=[
            schemas.CurrencyActivityOut(
                currency=item.currency,
                days=[
                    schemas.DayActivityOut(
                        date=day.day.isoformat(),
                        issued=day.issued,
                        redeemed=day.redeemed,
                        spent=day.spent,
                        refunded=day.refunded,
                        adjusted=day.adjusted,
                    )
                    for day in item.days
                ],
            )
            for item in report.activity
        ],
    ).model_dump(mode="json")


@router.get(
    "/reports/liability",
    response_model=schemas.LiabilityReportOut,
    responses=problems(401, 403),
    summary="Outstanding value per region and currency, reconciled with the ledger, and "
    "daily activity (support, admin)",
    description="Amounts in minor units. `days` (1–366) is how many days of activity, "
    "today (UTC) included; days without any show zeros.",
)
async def liability(
    who: Principal = Depends(staff),
    svc: Services = Depends(services_dependency),
    days: Annotated[int, Query(ge=1, le=reports.DAYS_MAX)] = reports.DAYS_DEFAULT,
) -> Any:
    report = await reports.liability(svc.db, now=svc.clock.now(), days=days)
    return render_report(report)

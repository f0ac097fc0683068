"""Demo data for `giftcard serve --demo`: a shopper, a staff member, an API key and a few
fresh codes, printed once so a newcomer can try everything at once."""

from __future__ import annotations

from sqlalchemy import select

from giftcard import cards, customers
from giftcard.clock import SystemClock
from giftcard.codes import format_code
from giftcard.config import Settings
from giftcard.db.engine import Database
from giftcard.db.tables import customers as customers_table
from giftcard.db.tables import staff as staff_table
from giftcard.money import format_minor, region
from giftcard.unit_of_work import UnitOfWork

DEMO_SHOPPER_EMAIL = "shopper@example.com"
DEMO_SHOPPER_PASSWORD = "demo-shopper-password"
DEMO_STAFF_EMAIL = "support@example.com"
DEMO_STAFF_PASSWORD = "demo-support-password"
# Face values in minor units of the US store.
DEMO_CARD_AMOUNTS = (2500, 5000, 10000)


async def seed(settings: Settings) -> list[str]:
    """Create what is missing and issue new demo codes; return lines to print."""
    clock = SystemClock()
    db = Database(settings.database_url)
    try:
        async with db.transaction(write=False) as connection:
            has_shopper = (
                await connection.execute(
                    select(customers_table.c.id).where(
                        customers_table.c.email == DEMO_SHOPPER_EMAIL
                    )
                )
            ).first() is not None
            has_staff = (
                await connection.execute(
                    select(staff_table.c.id).where(staff_table.c.email == DEMO_STAFF_EMAIL)
                )
            ).first() is not None
        if not has_shopper:
            await customers.sign_up(
                db,
                email=DEMO_SHOPPER_EMAIL,
                password=DEMO_SHOPPER_PASSWORD,
                region="US",
                name="Demo Shopper",
                clock=clock,
            )
        if not has_staff:
            await customers.create_staff(
                db,
                email=DEMO_STAFF_EMAIL,
                password=DEMO_STAFF_PASSWORD,
                role=customers.Role.ADMIN,
                name="Demo Support",
                clock=clock,
            )
        _, api_key = await customers.create_api_key(
            db, role=customers.Role.ADMIN, name="demo", clock=clock
        )
        us = region("US")
        issued = []
        for amount in DEMO_CARD_AMOUNTS:
            issued += await cards.issue(
                UnitOfWork(db, clock),
                cards.IssueRequest(amount=amount, region=us, kind=cards.CardKind.DIGITAL),
                secret_key=settings.secret_key,
                actor="demo",
            )
        physical = await cards.issue(
            UnitOfWork(db, clock),
            cards.IssueRequest(amount=2000, region=us, kind=cards.CardKind.PHYSICAL),
            secret_key=settings.secret_key,
            actor="demo",
        )
    finally:
        await db.dispose()
    lines = [
        "Demo data (codes are shown only now):",
        f"  shopper   {DEMO_SHOPPER_EMAIL} / {DEMO_SHOPPER_PASSWORD} (US store)",
        f"  staff     {DEMO_STAFF_EMAIL} / {DEMO_STAFF_PASSWORD} (admin)",
        f"  API key   {api_key} (admin)",
    ]
    for item in issued:
        value = format_minor(item.card.amount, item.card.currency)
        lines.append(f"  code      {format_code(item.code)}  {value}")
    for item in physical:
        lines.append(
            f"  physical  {format_code(item.code)}  serial {item.card.serial} "
            f"{format_minor(item.card.amount, item.card.currency)} (inactive until "
            "POST /v1/cards/activate)"
        )
    return lines

"""Demo data for `giftcard serve --demo`: a shopper, a staff member, an API key and a few
fresh codes, printed so a newcomer can try everything at once.

Starting the demo again reuses what the first start made. The API key is derived from
the server's secret key, so it is the same at every start and can be printed again
without being stored anywhere; the staff member's password is random and shown only
when the staff member is created. Only the codes are new each time.

The operator starts the demo from the command line, so what it creates is recorded in
the audit log as their doing (`cli`, `operator`): the staff member and API key when
first made, and each start's cards.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from giftcard import audit, cards, customers
from giftcard.clock import Clock, SystemClock
from giftcard.codes import format_code
from giftcard.config import Settings
from giftcard.db.engine import Database, is_unique_violation
from giftcard.errors import ErrorCode, GiftcardError
from giftcard.money import format_minor, region
from giftcard.unit_of_work import UnitOfWork

# The demo's welcome: its codes, key and passwords are shown once, under this heading.
DATA_HEADING = "Demo data (codes are shown only now):"
DEMO_SHOPPER_EMAIL = "shopper@example.com"
DEMO_SHOPPER_PASSWORD = "demo-shopper-password"
DEMO_STAFF_EMAIL = "support@example.com"
DEMO_API_KEY_NAME = "demo"
# What the demo API key is derived for: another purpose gives another key.
_DEMO_API_KEY_PURPOSE = b"demo-api-key"
# Random bytes of the demo staff member's password.
_STAFF_PASSWORD_BYTES = 12
# Face values in minor units of the US store.
DEMO_CARD_AMOUNTS = (2500, 5000, 10000)
DEMO_PHYSICAL_AMOUNT = 2000


def demo_api_key(secret_key: bytes) -> str:
    """The demo's admin API key: an HMAC of a fixed purpose under the server's secret key,
    as unguessable as that key and the same at every start."""
    digest = hmac.new(secret_key, _DEMO_API_KEY_PURPOSE, hashlib.sha256).digest()
    return customers.API_KEY_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Made:
    """What one demo start found or created, and the lines that tell about it."""

    api_key: str
    api_key_created: bool
    staff_password: str | None
    lines: list[str]


async def seed(settings: Settings) -> list[str]:
    """Create what is missing and issue new demo codes; return lines to print."""
    db = Database(settings.database_url)
    try:
        made = await seed_database(db, settings.secret_key, clock=SystemClock())
    finally:
        await db.dispose()
    return made.lines


async def seed_database(db: Database, secret_key: bytes, *, clock: Clock) -> Made:
    lines = [DATA_HEADING]
    lines.append(await _shopper(db, clock))
    staff_password, staff_line = await _staff(db, clock)
    lines.append(staff_line)
    api_key = demo_api_key(secret_key)
    created = await _ensure_api_key(db, api_key, clock)
    lines.append(f"  API key   {api_key} (admin)")
    lines += await _codes(db, secret_key, clock)
    return Made(api_key, created, staff_password, lines)


async def _shopper(db: Database, clock: Clock) -> str:
    try:
        await customers.sign_up(
            db,
            email=DEMO_SHOPPER_EMAIL,
            password=DEMO_SHOPPER_PASSWORD,
            region="US",
            name="Demo Shopper",
            clock=clock,
        )
    except GiftcardError as error:
        if error.code is not ErrorCode.EMAIL_TAKEN:
            raise
    return f"  shopper   {DEMO_SHOPPER_EMAIL} / {DEMO_SHOPPER_PASSWORD} (US store)"


async def _staff(db: Database, clock: Clock) -> tuple[str | None, str]:
    """The demo staff member, created with a random password on the first start only."""
    password = secrets.token_urlsafe(_STAFF_PASSWORD_BYTES)
    try:
        await customers.create_staff(
            db,
            email=DEMO_STAFF_EMAIL,
            password=password,
            role=customers.Role.ADMIN,
            name="Demo Support",
            clock=clock,
            audit_actor=audit.OPERATOR,
        )
    except GiftcardError as error:
        if error.code is not ErrorCode.EMAIL_TAKEN:
            raise
        async with db.transaction(write=False) as connection:
            owner = await customers.identity_of(connection, DEMO_STAFF_EMAIL)
        if owner is not None and owner.customer_id is not None:
            return None, f"  staff     none: {DEMO_STAFF_EMAIL} is a customer's address"
        return None, (
            f"  staff     {DEMO_STAFF_EMAIL} (admin; its password was shown when the demo "
            "first created it); the support console is at /support"
        )
    return password, (
        f"  staff     {DEMO_STAFF_EMAIL} / {password} (admin; shown only now): log in to "
        "the support console at /support"
    )


async def _ensure_api_key(db: Database, api_key: str, clock: Clock) -> bool:
    """Store the demo API key's hash unless it is there; True if stored now."""
    if await customers.authenticate(db, api_key, clock=clock) is not None:
        return False
    try:
        await customers.create_api_key(
            db,
            role=customers.Role.ADMIN,
            name=DEMO_API_KEY_NAME,
            clock=clock,
            key=api_key,
            audit_actor=audit.OPERATOR,
        )
    except IntegrityError as error:
        # Another demo start stored it at this moment: the same key either way.
        if is_unique_violation(error):
            return False
        raise
    return True


async def _codes(db: Database, secret_key: bytes, clock: Clock) -> list[str]:
    us = region("US")
    issued: list[cards.IssuedCard] = []
    for amount in DEMO_CARD_AMOUNTS:
        issued += await cards.issue(
            UnitOfWork(db, clock),
            cards.IssueRequest(amount=amount, region=us, kind=cards.CardKind.DIGITAL),
            secret_key=secret_key,
            actor="demo",
            audit_actor=audit.OPERATOR,
        )
    physical = await cards.issue(
        UnitOfWork(db, clock),
        cards.IssueRequest(amount=DEMO_PHYSICAL_AMOUNT, region=us, kind=cards.CardKind.PHYSICAL),
        secret_key=secret_key,
        actor="demo",
        audit_actor=audit.OPERATOR,
    )
    lines = []
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

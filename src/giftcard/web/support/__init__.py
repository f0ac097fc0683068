"""The support console under /support: staff log in, look up codes and customers, put
things right, read the audit log and the liability report.

Staff sessions live in their own cookie, sent only to /support (see
:mod:`giftcard.web.security`): a shopper's session is never a staff member's here, nor a
staff member's a shopper's on the shop's pages. Pages follow the shopper pages' rules:
server-rendered, POST/redirect/GET, CSRF on every form, each action confirming what it
did. Each slice of the console has its own module of routes.
"""

from __future__ import annotations

from fastapi import APIRouter

from giftcard.web.support import cards, customers, entry, records

router = APIRouter(include_in_schema=False)
# Each slice of the console has its own routes.
for part in (entry, cards, customers, records):
    router.include_router(part.router)

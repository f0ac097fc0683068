"""Console pages for customers: search, a customer's balance and history, adjustments
and the approval queue, gifts."""

from __future__ import annotations

from fastapi import APIRouter

from giftcard.web.support.session import HOME

router = APIRouter(prefix=HOME, include_in_schema=False)

"""Console pages for cards: the look-up result, freeze, unfreeze, cancel and replace."""

from __future__ import annotations

from fastapi import APIRouter

from giftcard.web.support.session import HOME

router = APIRouter(prefix=HOME, include_in_schema=False)

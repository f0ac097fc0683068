"""Console pages for the records: the audit log (with its CSV export) and the liability report."""

from __future__ import annotations

from fastapi import APIRouter

from giftcard.web.support.session import HOME

router = APIRouter(prefix=HOME, include_in_schema=False)

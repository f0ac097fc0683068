"""The support console under /support: staff log in, look up codes and customers, put
things right, read the audit log and the liability report. Staff sessions are kept in
their own cookie, apart from shoppers'."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/support", include_in_schema=False)

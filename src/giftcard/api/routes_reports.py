"""Reports: the store's outstanding gift card liability, reconciled against the ledger."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["reports"])

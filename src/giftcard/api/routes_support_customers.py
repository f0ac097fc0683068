"""Support: find customers, read their balance and history, adjust balances (with a
second staff member's approval above a threshold), correct a gift's recipient."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["support"])

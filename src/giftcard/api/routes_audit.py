"""The audit log: read, filter and export every staff and API-key action."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["support"])

"""Support: look up a card by code, serial or last four; freeze, unfreeze, cancel, replace."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/v1", tags=["support"])

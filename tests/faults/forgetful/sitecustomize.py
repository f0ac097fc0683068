"""A deliberately broken build, for the test of the bank test: on PYTHONPATH, Python
imports this module at start-up in the server and in each worker, and it makes every
Idempotency-Key claim a fresh one, so a retried request acts again instead of getting
its first answer back. Product code has no switch for this; only this test loads it."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from giftcard import idempotency

_claim = idempotency.claim


def _forgetful_claim(connection: Any, keyed: Any, *, now: datetime) -> Any:
    return _claim(connection, dataclasses.replace(keyed, key=uuid.uuid4().hex), now=now)


idempotency.claim = _forgetful_claim

"""Password hashing with Argon2id, off the event loop.

Hashing takes tens of milliseconds of CPU on purpose, so it runs in a worker thread.
Log-in with an unknown email still verifies against a dummy hash, so that a wrong email
and a wrong password take the same time.
"""

from __future__ import annotations

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

PASSWORD_LENGTH_MIN = 8
PASSWORD_LENGTH_MAX = 256

_hasher = PasswordHasher()
# Made on first use, not at import: every CLI command imports this module.
_dummy_hash: str | None = None


def use_fast_hashing_for_tests() -> None:
    """Cheap parameters so a test suite can create hundreds of accounts; never in serving."""
    global _hasher, _dummy_hash
    _hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    _dummy_hash = None


async def prepare() -> None:
    """Make the dummy hash before the first log-in, so that log-in costs the same from
    the very first request. The server calls this at start-up."""
    await anyio.to_thread.run_sync(_dummy)


def _dummy() -> str:
    """A hash of a password nobody has, to verify against when there is no account."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash("a password nobody has")
    return _dummy_hash


async def hash_password(password: str) -> str:
    return await anyio.to_thread.run_sync(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    """True if `password` matches; with no hash, spend the same time and say False."""

    def check() -> bool:
        try:
            return _hasher.verify(password_hash or _dummy(), password) and bool(password_hash)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await anyio.to_thread.run_sync(check)

"""Fixtures for end-to-end tests: a fresh database of each kind for a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest


def _admin_url(postgres_url: str, name: str) -> str:
    return postgres_url.rsplit("/", 1)[0] + "/" + name


async def _admin(postgres_url: str, statement: str) -> None:
    connection = await asyncpg.connect(postgres_url, timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def server_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: the server migrates it when it starts."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'e2e.db'}"
        return
    postgres_url: str = request.getfixturevalue("postgres_url")
    name = f"giftcard_e2e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    yield _admin_url(postgres_url, name)
    asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

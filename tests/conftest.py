"""Shared fixtures. Integration tests take `backend` and run once on SQLite and once on
PostgreSQL, each test in a database of its own, migrated by the real Alembic migrations."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event

from giftcard import ids, passwords
from giftcard.api.app import create_app
from giftcard.clock import FrozenClock
from giftcard.config import Settings
from giftcard.db.engine import Database
from giftcard.db.migrate import upgrade
from giftcard.services import Services

pytest_plugins = ["tests.services", "tests.sweep"]

TEST_SECRET_KEY = b"test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"

passwords.use_fast_hashing_for_tests()
ids.use_secret(TEST_SECRET_KEY)


@pytest.fixture(autouse=True)
def public_ids() -> None:
    """Ids enciphered under the test servers' key, so that a test can read and write the
    ids its servers hand out (a test that builds services with another key changes it)."""
    ids.use_secret(TEST_SECRET_KEY)


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


# Fixtures that prepare databases are synchronous and run their own short event loop, so
# that they can be looked up lazily (SQLite tests never start PostgreSQL).


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(upgrade(f"sqlite:///{path}"))
    return path


@pytest.fixture(scope="session")
def postgres_template(postgres_url: str) -> Iterator[str]:
    """A migrated database that every test's own database is copied from."""
    name = f"giftcard_template_{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        await upgrade(_with_database(postgres_url, name))

    async def drop() -> None:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(create())
    yield name
    asyncio.run(drop())


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """Which database a test runs on. Money-moving tests may also ask for
    "postgresql-serializable": PostgreSQL with every transaction SERIALIZABLE."""
    return str(request.param)


# Parametrize a test module with this to run it on SQLite, PostgreSQL, and PostgreSQL at
# SERIALIZABLE isolation (where the retry of serialization failures is exercised).
ALL_ISOLATIONS = pytest.mark.parametrize(
    "backend", ["sqlite", "postgresql", "postgresql-serializable"], indirect=True
)


async def _admin(server: str, statement: str) -> None:
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "giftcard.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    if not backend.startswith("postgresql"):
        raise ValueError(f"unknown backend {backend!r}")
    server: str = request.getfixturevalue("postgres_url")
    template_name: str = request.getfixturevalue("postgres_template")
    name = f"giftcard_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server, f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
    yield _with_database(server, name)
    asyncio.run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def settings(database_url: str, backend: str, tmp_path: Path) -> Settings:
    isolation = "SERIALIZABLE" if backend == "postgresql-serializable" else None
    return Settings(
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        database_isolation=isolation,
        # An app whose lifespan runs a sender writes any email here, not into the tree.
        mail_dir=tmp_path / "mail",
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
async def services(settings: Settings, clock: FrozenClock) -> AsyncIterator[Services]:
    svc = Services.build(settings, clock=clock)
    yield svc
    await svc.close()


@pytest.fixture
async def client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@dataclass
class Shopper:
    id: str
    email: str
    token: str
    region: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


_counter = iter(range(1, 10**9))


async def sign_up(client: httpx.AsyncClient, region: str = "US", **extra: Any) -> Shopper:
    """Sign up and log in a new shopper."""
    email = f"shopper{next(_counter)}-{uuid.uuid4().hex[:6]}@example.com"
    password = "correct horse battery"
    created = await client.post(
        "/v1/customers", json={"email": email, "password": password, "region": region, **extra}
    )
    assert created.status_code == 201, created.text
    session = await client.post("/v1/sessions", json={"email": email, "password": password})
    assert session.status_code == 201, session.text
    return Shopper(created.json()["id"], email, session.json()["token"], region)


async def api_key(services: Services, role: str = "admin") -> dict[str, str]:
    from giftcard.customers import Role, create_api_key

    _, key = await create_api_key(services.db, role=Role(role), name="test", clock=services.clock)
    return {"Authorization": f"Bearer {key}"}


@dataclass
class StaffMember:
    id: str
    email: str
    token: str
    role: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def staff_member(
    client: httpx.AsyncClient, services: Services, role: str = "support"
) -> StaffMember:
    """Create a staff member with `role` and log them in through the API."""
    from giftcard.customers import Role, create_staff

    email = f"{role}{next(_counter)}-{uuid.uuid4().hex[:6]}@staff.example.com"
    password = "staff password 123"
    await create_staff(
        services.db, email=email, password=password, role=Role(role), clock=services.clock
    )
    session = await client.post("/v1/sessions", json={"email": email, "password": password})
    assert session.status_code == 201, session.text
    body = session.json()
    return StaffMember(body["staff"]["id"], email, body["token"], role)


async def issue(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    *,
    amount: int = 2500,
    region: str = "US",
    kind: str = "digital",
    count: int = 1,
    **extra: Any,
) -> list[dict[str, Any]]:
    response = await client.post(
        "/v1/cards",
        json={"amount": amount, "region": region, "kind": kind, "count": count, **extra},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    cards: list[dict[str, Any]] = response.json()["data"]
    return cards


PROBLEM = "application/problem+json"
ANY: Any = object()


def assert_problem(
    response: httpx.Response, status: int, code: str, *, param: object = ANY, why: str = ""
) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status and code, its type and
    title, and a sentence for people; `param` too when given."""
    assert response.status_code == status, (why, response.status_code, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), (why, response.headers)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, (why, body)
    assert body["status"] == status, (why, body)
    assert body["type"].endswith(code), (why, body)
    assert isinstance(body["title"], str), why
    assert body["title"], (why, body)
    assert isinstance(body["detail"], str), why
    assert body["detail"], (why, body)
    if param is not ANY:
        assert body.get("param") == param, (why, body)
    return body


class PeakConnections:
    """The most requests seen in flight at one time, by the database connections in use
    at once: a race test that saw only one at a time proved nothing. Counted where a
    call takes its connection (`Database._pooled`), not by the pool's checkouts: a
    connection a call is done with may stay out of the pool, kept for the next call, in
    use by none. On SQLite, whose statements run in the process with no wait, so that a
    connection is seldom in use by two requests at once, also by the units of work
    written in one transaction together (`Database._commit_sqlite_batch`): they were
    all waiting to write at once."""

    def __init__(self) -> None:
        self.current = 0
        self.peak = 0
        self.reset()

    def checkout(self, *_: Any) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)

    def checkin(self, *_: Any) -> None:
        self.current -= 1

    def together(self, count: int) -> None:
        self.peak = max(self.peak, count)

    def reset(self) -> None:
        self.peak = self.current
        self._batches_before = {
            use_case: batches_of_more_than(use_case, self.BATCH_MIN - 1)
            for use_case in ("payments", "redemptions")
        }

    # A batch of group commit (PostgreSQL) this big settled requests that were in flight
    # together on one connection: it proves a race as many connections do.
    BATCH_MIN = 9

    def overlapped(self, minimum: int) -> bool:
        """Whether `minimum` connections were in use at once since the last reset, or a
        batch of at least BATCH_MIN requests was settled together."""
        before = getattr(self, "_batches_before", {})
        return self.peak >= minimum or any(
            batches_of_more_than(use_case, self.BATCH_MIN - 1) > count
            for use_case, count in before.items()
        )


@pytest.fixture
def failing_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every batch of group commit fails (its journal transactions are refused) until
    the test ends; the sizes of the batches tried, in order."""
    from giftcard import ledger

    tried: list[int] = []

    async def failing(_connection: Any, entries: Any, **_: Any) -> Any:
        tried.append(len(entries))
        raise ledger.LedgerInvariantError("refused for the test")

    monkeypatch.setattr(ledger, "post_many", failing)
    return tried


def batches_of_more_than(use_case: str, size: int) -> float:
    """How many transactions of group commit in this process settled more than `size`
    requests of `use_case` (`size` one of the histogram's bounds)."""
    from prometheus_client import REGISTRY

    labels = {"use_case": use_case}
    every = REGISTRY.get_sample_value("giftcard_group_commit_size_count", labels) or 0.0
    smaller = (
        REGISTRY.get_sample_value(
            "giftcard_group_commit_size_bucket", {**labels, "le": f"{float(size)}"}
        )
        or 0.0
    )
    return every - smaller


@contextlib.contextmanager
def counting_connections(services: Services) -> Iterator[PeakConnections]:
    counter = PeakConnections()
    db = services.db
    # The sender of SQLite's write batches holds the method it calls.
    pooled, commit_batch = db._pooled, db._sqlite_batches._send_batch

    async def counted_batch(batch: Any) -> Any:
        counter.together(len(batch))
        return await commit_batch(batch)

    @contextlib.asynccontextmanager
    async def counted(*, autocommit: bool) -> AsyncIterator[Any]:
        async with pooled(autocommit=autocommit) as connection:
            counter.checkout()
            try:
                yield connection
            finally:
                counter.checkin()

    db._pooled = counted  # type: ignore[method-assign]
    db._sqlite_batches._send_batch = counted_batch
    try:
        yield counter
    finally:
        del db._pooled
        db._sqlite_batches._send_batch = commit_batch


@contextlib.contextmanager
def sent_statements(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """Every statement sent to `db` while in the block, with its parameters, in order."""
    sent: list[tuple[str, Any]] = []

    def record(_connection: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def burst(*requests: Any, timeout_s: float = 120) -> list[httpx.Response]:
    """Run requests at once, bounded in time (generous for a slow CI machine)."""
    responses: list[httpx.Response] = await asyncio.wait_for(asyncio.gather(*requests), timeout_s)
    return responses


__all__ = [
    "ALL_ISOLATIONS",
    "ANY",
    "PROBLEM",
    "PeakConnections",
    "Shopper",
    "api_key",
    "assert_problem",
    "batches_of_more_than",
    "burst",
    "counting_connections",
    "issue",
    "replace",
    "sent_statements",
    "sign_up",
]

"""Generated requests (schemathesis) as every role: no answer is a server error or one the
OpenAPI document does not describe, whoever asks.

`test_openapi.py` sends generated requests to each operation as a merchant key, a
shopper and an admin staff member; here the other roles do the same (a support key, an
admin key, a support staff member), and then every role walks through sequences of
calls that follow the links schemathesis infers between operations (a card issued, then
looked up, frozen, replaced; an adjustment made, then approved; ...), so that the ids
each call gets are the ones the next call sends, and the operations behind the ids are
reached and not only their 404s.

On SQLite only, like `test_openapi.py`: the documented surface does not depend on the
database; the behaviour behind it runs on both databases in the other tests.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck
from schemathesis.python.asgi import shutdown_lifespans

from giftcard import customers
from giftcard.api.app import create_app
from giftcard.clock import SystemClock
from giftcard.config import Settings
from giftcard.db.engine import Database
from tests.conftest import TEST_SECRET_KEY
from tests.integration.test_openapi import (
    CHECKS,
    DOOR_REFUSALS,
    LIMIT_GENEROUS,
    _answer,
    _fuzz_runs,
    answers_as_each,
)

# Every role, by the secret it sends: API keys, and the sessions of a shopper and of
# staff members.
KEY_ROLES = {
    "merchant key": customers.Role.MERCHANT,
    "support key": customers.Role.SUPPORT,
    "admin key": customers.Role.ADMIN,
}
SESSION_ROLES = {
    "shopper": None,
    "support staff": customers.Role.SUPPORT,
    "admin staff": customers.Role.ADMIN,
}
ROLES = (*KEY_ROLES, *SESSION_ROLES)
# test_openapi.py already sends single requests as these.
FUZZED_IN_TEST_OPENAPI = ("merchant key", "shopper", "admin staff")
ROLES_HERE = tuple(role for role in ROLES if role not in FUZZED_IN_TEST_OPENAPI)

# Bounds that keep this file under a minute on a small machine.
EXAMPLES_PER_ROLE_MAX = 5
SEQUENCES_PER_ROLE_MAX = 8
STEPS_PER_SEQUENCE_MAX = 8
PASSWORD = "correct horse battery"
LOG_OUT = ("DELETE", "/v1/sessions/current")


@dataclass
class Roles:
    app: FastAPI
    keys: dict[str, str]
    sessions: dict[str, str]
    database_url: str

    @functools.cached_property
    def schema(self) -> Any:
        """The app's document as schemathesis reads it, read once for the whole file."""
        return schemathesis.openapi.from_asgi("/openapi.json", self.app)

    def secret(self, role: str, method: str, path: str) -> str:
        """The secret `role` sends to `method path`: log-out ends the session it is sent
        with, so each log-out gets a session of its own."""
        if role in self.keys:
            return self.keys[role]
        if (method, path) == LOG_OUT:
            return asyncio.run(self._log_in(role))
        return self.sessions[role]

    async def _log_in(self, role: str) -> str:
        db = Database(self.database_url)
        try:
            session = await customers.log_in(
                db, email=_email(role), password=PASSWORD, ttl_s=3600, clock=SystemClock()
            )
        finally:
            await db.dispose()
        return session.token


def _email(role: str) -> str:
    return "fuzz-" + role.replace(" ", "-") + "@example.com"


@pytest.fixture(scope="module")
def roles(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Roles]:
    """One app for the whole file, on a SQLite database of its own, with an API key of
    each role, a shopper and a staff member of each role, each logged in. (The set-up
    uses a database handle of its own, in a loop of its own: schemathesis runs the app's
    lifespan in its own thread.)"""
    path = tmp_path_factory.mktemp("fuzz-roles") / "giftcard.db"
    shutil.copyfile(sqlite_template, path)
    database_url = f"sqlite:///{path}"
    settings = Settings(
        database_url=database_url,
        secret_key=TEST_SECRET_KEY,
        limit_redeem_failures_account=LIMIT_GENEROUS,
        limit_redeem_failures_address=LIMIT_GENEROUS,
        limit_redeem_misses_service=LIMIT_GENEROUS,
        limit_signups_address=LIMIT_GENEROUS,
        limit_login_failures_account=LIMIT_GENEROUS,
        limit_login_failures_address=LIMIT_GENEROUS,
    )
    clock = SystemClock()

    async def seed() -> dict[str, str]:
        db = Database(database_url)
        try:
            keys = {}
            for role, key_role in KEY_ROLES.items():
                _, keys[role] = await customers.create_api_key(
                    db, role=key_role, name=role, clock=clock
                )
            for role, staff_role in SESSION_ROLES.items():
                if staff_role is None:
                    await customers.sign_up(
                        db,
                        email=_email(role),
                        password=PASSWORD,
                        region="US",
                        name=None,
                        clock=clock,
                    )
                else:
                    await customers.create_staff(
                        db, email=_email(role), password=PASSWORD, role=staff_role, clock=clock
                    )
        finally:
            await db.dispose()
        return keys

    keys = asyncio.run(seed())
    found = Roles(create_app(settings), keys, {}, database_url)
    found.sessions = {role: asyncio.run(found._log_in(role)) for role in SESSION_ROLES}
    yield found
    # Runs the lifespan's shutdown, which closes the app's database connections.
    shutdown_lifespans()


@pytest.mark.parametrize(("method", "path", "mode"), _fuzz_runs())
def test_generated_requests_from_the_other_roles_get_documented_answers(
    roles: Roles, method: str, path: str, mode: schemathesis.GenerationMode
) -> None:
    """Given generated requests, valid and invalid, to one operation, sent by a support
    key, an admin key and a support staff member in turn, every answer has a documented
    status, content type and body shape, and none is a server error."""
    answers = answers_as_each(
        roles.schema[path][method],
        mode,
        ROLES_HERE,
        lambda role: roles.secret(role, method, path),
        examples=EXAMPLES_PER_ROLE_MAX,
    )
    assert all(answers.values()), answers


@pytest.mark.parametrize("role", ROLES)
def test_sequences_that_follow_the_links_get_documented_answers(roles: Roles, role: str) -> None:
    """Given sequences of calls by one role, each next call taking ids from an earlier
    answer along a link schemathesis inferred from the document, every answer has a
    documented status, content type and body shape, and none is a server error; and some
    call gets past the door, so the sequence reached the operations."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", roles.app)
    assert schema.analysis.inject_links() > 0, "no links were inferred: nothing is chained"
    # Valid input only: the single-operation runs send invalid input already, and here
    # a call that creates something must succeed for its id to feed the next one.
    schema.config.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
    answers: list[str] = []

    class Sequence(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            secret = roles.secret(role, case.method.upper(), case.operation.path)
            return {"headers": {"Authorization": f"Bearer {secret}"}}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            answers.append(_answer(response))
            case.validate_response(response, checks=CHECKS, headers=kwargs.get("headers"))

    Sequence.run(
        settings=hypothesis.settings(
            max_examples=SEQUENCES_PER_ROLE_MAX,
            stateful_step_count=STEPS_PER_SEQUENCE_MAX,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
    )

    assert any(answer not in DOOR_REFUSALS for answer in answers), answers

"""The bank test (after Jepsen's bank workload): money moved over HTTP by concurrent
clients while the server is killed with SIGKILL again and again (and, on PostgreSQL, the
database crash-restarted once) is never lost and never applied twice (SPEC §6, §9).

The workload, its model and its check are in :mod:`tests.faults.bank`; the processes it
kills in :mod:`tests.faults.processes`. `make soak` runs the same for longer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.faults.bank import BankSettings, Outcome, bank_env, dumps, run_workload
from tests.faults.processes import PostgresUnavailable, PrivatePostgres

pytestmark = pytest.mark.e2e

LOAD_S = 35.0
BROKEN_LOAD_S = 8.0
KILLS_MIN = 2
# A module that, on PYTHONPATH, makes the server forget every Idempotency-Key.
FORGETFUL = Path(__file__).with_name("forgetful")


async def _create_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url, timeout=10)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own, deleted at the end whatever happens."""
    try:
        postgres = PrivatePostgres()
    except PostgresUnavailable as error:
        if os.environ.get("GIFTCARD_TEST_POSTGRES_URL") or os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is expected here, but {error}")
        pytest.skip(f"!!! the bank test on PostgreSQL was SKIPPED: {error} !!!")
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop()


def _report(outcome: Outcome) -> str:
    return dumps(outcome.numbers()) + "\n" + outcome.report.summary()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_money_is_never_lost_or_doubled_when_the_server_is_killed(
    database: str, tmp_path: Path
) -> None:
    """Given customers funded by redemptions, when eight clients redeem, pay, capture,
    void, refund, adjust and send gifts for 35 s with Idempotency-Keys, retrying each
    until answered, while the server (two workers) is killed with SIGKILL every few
    seconds and restarted, and on PostgreSQL the database is crash-restarted once, then
    every acknowledged operation is in the database exactly once, nothing refused is,
    each balance equals the model's and none is negative, every operation was answered
    within 10 s of the server being back, and `giftcard verify` is clean."""
    with contextlib.ExitStack() as stack:
        postgres = None
        url = f"sqlite:///{tmp_path / 'bank.db'}"
        if database == "postgresql":
            postgres = stack.enter_context(private_postgres())
            await _create_database(postgres.url, "bank")
            url = postgres.url.rsplit("/", 1)[0] + "/bank"
        settings = BankSettings(duration_s=LOAD_S, postgres_restarts=1 if postgres else 0)
        outcome = await run_workload(bank_env(url, tmp_path), tmp_path, settings, postgres=postgres)
    print(_report(outcome))
    bank, report = outcome.bank, outcome.report
    assert bank.stats.kills >= KILLS_MIN, "too few kills to prove anything"
    if postgres is not None:
        assert bank.stats.postgres_restarts == 1
    assert report.acknowledged >= 80, "too little work to prove anything"
    assert sum(1 for op in bank.operations if op.resent is not None) > 0
    assert not report.problems, _report(outcome)
    assert outcome.verify.returncode == 0, outcome.verify.stdout + outcome.verify.stderr
    assert "OK: every invariant holds." in outcome.verify.stdout


async def test_the_bank_test_catches_a_server_that_forgets_idempotency_keys(
    tmp_path: Path,
) -> None:
    """Given a deliberately broken build, where every request claims a fresh key (the
    module in `forgetful/` patches the claim in the server's processes), when the same
    workload runs against it, with a third of the answers "lost" and the requests sent
    again, then the check finds money applied twice: a balance above the model's, and
    requests sent again answered differently. (`giftcard verify` cannot see it: every
    journal transaction is balanced; only what the clients were told shows it.)"""
    python_path = os.pathsep.join(filter(None, [str(FORGETFUL), os.environ.get("PYTHONPATH")]))
    env = bank_env(f"sqlite:///{tmp_path / 'bank.db'}", tmp_path, PYTHONPATH=python_path)
    # No kills: lost answers alone make the broken build act twice, and sooner.
    settings = BankSettings(duration_s=BROKEN_LOAD_S, kills=False, lost_answer_rate=0.3, seed=12)
    outcome = await run_workload(env, tmp_path, settings)
    print(_report(outcome))
    duplicated = outcome.report.of_kind("duplicated")
    assert any("sent again got" in problem for problem in duplicated), _report(outcome)
    assert any("the model" in problem for problem in duplicated), _report(outcome)

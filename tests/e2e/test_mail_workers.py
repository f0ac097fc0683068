"""Email senders as real processes against a real SMTP server (aiosmtpd in this test
process), on SQLite and PostgreSQL: two `giftcard worker` processes racing over the same
200 messages send each exactly once; a worker killed with SIGKILL after the server
accepted a message but before it was marked sent leaves exactly one duplicate, with the
same Message-ID, and nothing lost; `giftcard serve` sends too, says where mail goes
without the URL's password, and `giftcard mail test` reports the delivery.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from giftcard.clock import SystemClock
from giftcard.db.engine import Database
from giftcard.db.tables import outbox_messages
from giftcard.mail import outbox
from giftcard.mail.outbox import MessageKind
from tests.e2e.server import GIFTCARD, base_env, run_cli, running_server
from tests.mail_server import Received, self_signed_certificate, smtp_server

pytestmark = pytest.mark.e2e

RACED_MESSAGES = 200
DELIVERY_TIMEOUT_S = 120
WORKER_STOP_TIMEOUT_S = 30
# A worker killed mid-send holds its claim this long; the SMTP timeout must be shorter.
SHORT_CLAIM = {"GIFTCARD_MAIL_CLAIM_TTL": "3s", "GIFTCARD_SMTP_TIMEOUT": "1s"}


def _enqueue(database_url: str, count: int) -> list[str]:
    """Queue `count` test messages in one transaction; their Message-IDs."""

    async def work() -> list[str]:
        db = Database(database_url)
        try:
            async with db.transaction() as connection:
                now = SystemClock().now()
                for number in range(count):
                    await outbox.enqueue(
                        connection,
                        kind=MessageKind.TEST,
                        recipient=f"friend{number}@example.com",
                        ref_id=None,
                        now=now,
                    )
                rows = await connection.execute(
                    select(outbox_messages.c.message_id).order_by(outbox_messages.c.id)
                )
                return list(rows.scalars())
        finally:
            await db.dispose()

    return asyncio.run(work())


def _unsent(database_url: str) -> int:
    async def work() -> int:
        db = Database(database_url)
        try:
            async with db.transaction(write=False) as connection:
                counted = await connection.execute(
                    select(func.count()).where(outbox_messages.c.status != "sent")
                )
                return int(counted.scalar_one())
        finally:
            await db.dispose()

    return asyncio.run(work())


def _wait_all_sent(database_url: str, workers: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while _unsent(database_url):
        assert time.monotonic() < deadline, "the workers did not send everything in time"
        assert all(worker.poll() is None for worker in workers), "a worker exited"
        time.sleep(0.5)


@contextmanager
def _worker(env: Mapping[str, str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`giftcard worker`, stopped with SIGTERM on exit (SIGKILL if it hangs)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(GIFTCARD), "worker"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=WORKER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=WORKER_STOP_TIMEOUT_S)


def _stop(worker: subprocess.Popen[bytes]) -> int:
    worker.send_signal(signal.SIGTERM)
    return worker.wait(timeout=WORKER_STOP_TIMEOUT_S)


def _sent_lines(log_path: Path) -> int:
    return log_path.read_text(errors="replace").count('"message": "email sent"')


def test_two_workers_racing_over_the_same_messages_send_each_once(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given 200 queued messages and two workers started together, every message
    reaches the server exactly once (counted by Message-ID), both workers took part,
    and each stops cleanly on SIGTERM."""
    with smtp_server() as smtp:
        env = base_env(server_database_url, GIFTCARD_SMTP_URL=smtp.url)
        assert run_cli(env, "migrate").returncode == 0
        queued = _enqueue(server_database_url, RACED_MESSAGES)
        logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
        with _worker(env, logs[0]) as first, _worker(env, logs[1]) as second:
            _wait_all_sent(server_database_url, [first, second])
            exits = [_stop(first), _stop(second)]
        received = smtp.recorder.message_ids()

    assert exits == [0, 0]
    duplicates = {mid: n for mid, n in Counter(received).items() if n > 1}
    assert duplicates == {}
    assert sorted(received) == sorted(queued)
    sent_by = [_sent_lines(log) for log in logs]
    assert sum(sent_by) == RACED_MESSAGES
    assert all(count > 0 for count in sent_by), sent_by


def test_a_worker_killed_between_acceptance_and_record_gives_one_duplicate(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given a worker that the SMTP server kills with SIGKILL right after accepting its
    third message (before the worker can mark it sent), a second worker takes that
    message over once the dead one's claim ran out: it arrives twice, with the same
    Message-ID, every other message once, none lost."""
    killed: list[str] = []
    worker_pids: list[int] = []
    lock = threading.Lock()

    def kill_on_third(received: Received) -> None:
        with lock:
            if len(killed) == 0 and len(smtp.recorder.received) == 3:
                killed.append(received.message_id)
                os.kill(worker_pids[0], signal.SIGKILL)

    with smtp_server() as smtp:
        smtp.recorder.on_accept = kill_on_third
        env = base_env(server_database_url, GIFTCARD_SMTP_URL=smtp.url, **SHORT_CLAIM)
        assert run_cli(env, "migrate").returncode == 0
        queued = _enqueue(server_database_url, 5)
        with _worker(env, tmp_path / "doomed.log") as doomed:
            worker_pids.append(doomed.pid)
            assert doomed.wait(timeout=DELIVERY_TIMEOUT_S) == -signal.SIGKILL
        assert _unsent(server_database_url) > 0
        with _worker(env, tmp_path / "survivor.log") as survivor:
            _wait_all_sent(server_database_url, [survivor])
            assert _stop(survivor) == 0
        received = smtp.recorder.message_ids()

    counts = Counter(received)
    assert set(counts) == set(queued)  # none lost
    assert {mid: n for mid, n in counts.items() if n > 1} == {killed[0]: 2}


def test_serve_sends_says_where_without_the_password_and_mail_test_reports(
    server_database_url: str, tmp_path: Path
) -> None:
    """`giftcard serve` announces the SMTP server without the URL's password; its own
    sender delivers what `giftcard mail test` queues, over STARTTLS (the server's
    certificate trusted through SSL_CERT_FILE, as an operator with a private authority
    would), logging in with the URL's user; the command reports it sent."""
    certificate = self_signed_certificate(tmp_path)
    with smtp_server(starttls=certificate, login=("ops", "s3cret-password")) as smtp:
        url = f"smtp://ops:s3cret-password@127.0.0.1:{smtp.port}"
        env = base_env(
            server_database_url, GIFTCARD_SMTP_URL=url, SSL_CERT_FILE=str(certificate.cert)
        )
        with running_server(env, tmp_path / "server.log", workers=1) as server:
            result = run_cli(env, "mail", "test", "--to", "ops@example.com")
            log = server.log_tail(20_000)
        received = list(smtp.recorder.received)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Emails go to smtp://127.0.0.1:{smtp.port}" in log
    assert "s3cret-password" not in log
    assert "s3cret-password" not in result.stdout + result.stderr
    [email] = received
    assert (email.user, email.over_tls) == ("ops", True)
    assert email.recipients == ["ops@example.com"]
    assert f"Message-ID {email.message_id}" in result.stdout
    assert result.stdout.strip().endswith("Sent.")


def _rows(database_url: str) -> list[tuple[str, int, str | None]]:
    """(status, attempts, claim_token) of every message, in the order queued."""

    async def work() -> list[tuple[str, int, str | None]]:
        db = Database(database_url)
        try:
            async with db.transaction(write=False) as connection:
                table = outbox_messages.c
                rows = await connection.execute(
                    select(table.status, table.attempts, table.claim_token).order_by(table.id)
                )
                return [(row.status, row.attempts, row.claim_token) for row in rows]
        finally:
            await db.dispose()

    return asyncio.run(work())


def test_sigterm_lets_a_worker_record_the_email_in_hand_and_hand_back_the_rest(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given a worker told to stop (SIGTERM) while the server is accepting its first
    email, it records that email sent, hands back the rest of its claim untried, and
    exits 0: a restart sends nothing twice and waits for no claim to run out."""
    worker_pids: list[int] = []

    def stop_on_first(_received: Received) -> None:
        if len(smtp.recorder.received) == 1:
            os.kill(worker_pids[0], signal.SIGTERM)

    with smtp_server() as smtp:
        smtp.recorder.on_accept = stop_on_first
        env = base_env(server_database_url, GIFTCARD_SMTP_URL=smtp.url)
        assert run_cli(env, "migrate").returncode == 0
        _enqueue(server_database_url, 3)
        with _worker(env, tmp_path / "worker.log") as worker:
            worker_pids.append(worker.pid)
            exit_code = worker.wait(timeout=DELIVERY_TIMEOUT_S)

    assert exit_code == 0
    assert len(smtp.recorder.received) == 1
    assert _rows(server_database_url) == [
        ("sent", 1, None),
        ("pending", 0, None),
        ("pending", 0, None),
    ]


def test_a_bad_smtp_url_stops_the_worker_with_the_variable_named(tmp_path: Path) -> None:
    env = base_env(f"sqlite:///{tmp_path / 'bad.db'}", GIFTCARD_SMTP_URL="smtp.example.com:587")

    result = run_cli(env, "worker")

    assert result.returncode == 1
    assert "GIFTCARD_SMTP_URL must start with smtp:// or smtps://" in result.stderr


def test_mail_test_reports_a_refusal_or_that_nothing_sent_it(tmp_path: Path) -> None:
    """`giftcard mail test` exits 1 with the server's answer when the first attempt was
    refused, and says so when no server or worker picked the email up in time."""
    database_url = f"sqlite:///{tmp_path / 'mail.db'}"
    with smtp_server() as smtp:
        # Both test emails' first attempts: the one nobody sent goes first once a
        # worker runs.
        for _ in range(2):
            smtp.recorder.refuse_next("RCPT", "550 5.7.1 Relaying denied")
        env = base_env(database_url, GIFTCARD_SMTP_URL=smtp.url)
        assert run_cli(env, "migrate").returncode == 0
        nobody = run_cli(env, "mail", "test", "--to", "ops@example.com", "--wait", "1")
        with _worker(env, tmp_path / "worker.log"):
            refused = run_cli(env, "mail", "test", "--to", "ops@example.com")

    assert nobody.returncode == 1
    assert "not sent within 1s: is `giftcard serve` or `giftcard worker` running" in (nobody.stderr)
    assert refused.returncode == 1
    assert f"attempt 1 failed: smtp://127.0.0.1:{smtp.port} refused the recipient: 550 5.7.1" in (
        refused.stderr
    )
    assert "It will be tried again from" in refused.stderr

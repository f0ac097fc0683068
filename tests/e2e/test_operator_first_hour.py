"""An operator's first hour with the real program and the real Makefile: a busy port is
refused before anything happens, `make run PORT=...` serves elsewhere, `make shell` finds
`giftcard`, and `cards issue --expires` writes the day a printed card should say."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import cast

import asyncpg
import httpx
from sqlalchemy import text

from giftcard.db.engine import Database
from tests.e2e.server import (
    CLI_TIMEOUT_S,
    SERVER_START_TIMEOUT_S,
    Server,
    base_env,
    run_cli,
    running_server,
    stop_process_group,
    wait_ready,
)
from tests.services import free_port

ROOT = Path(__file__).resolve().parents[2]
STOP_TIMEOUT_S = 20


@contextlib.contextmanager
def port_held() -> Iterator[int]:
    """A port something else listens on, as when a second `make run` starts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def make(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def assert_refused_before_anything(
    result: subprocess.CompletedProcess[str], port: int, database: Path
) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"port {port} on 127.0.0.1 is in use already" in result.stderr
    assert f"--port {port + 1}" in result.stderr
    assert "Traceback" not in output
    assert "code" not in result.stdout
    assert not database.exists(), "the database was made (or migrated) for nothing"


def test_serve_on_a_busy_port_says_so_in_a_line_and_issues_no_codes(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    env = base_env(f"sqlite:///{database}")

    with port_held() as port:
        result = run_cli(env, "serve", "--demo", "--port", str(port))

    assert result.returncode == 1
    assert_refused_before_anything(result, port, database)
    assert result.stderr.count("\n") == 1, result.stderr


def test_serve_refuses_a_host_that_is_not_this_machines(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"

    result = run_cli(base_env(f"sqlite:///{database}"), "serve", "--host", "192.0.2.1")

    assert result.returncode == 1
    assert "cannot listen on 192.0.2.1 port 8000" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not database.exists()


def test_make_run_on_a_busy_port_then_on_the_port_it_is_given(tmp_path: Path) -> None:
    database = tmp_path / "demo.db"
    env = base_env(f"sqlite:///{database}", GIFTCARD_LOG_FORMAT="text")

    with port_held() as busy:
        refused = make(env, "run", f"PORT={busy}")
    assert_refused_before_anything(refused, busy, database)

    port = free_port()
    log = tmp_path / "make-run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            ["make", "--no-print-directory", "run", f"PORT={port}", "HOST=127.0.0.1"],
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    try:
        wait_ready(
            Server(f"http://127.0.0.1:{port}", process, log),
            time.monotonic() + SERVER_START_TIMEOUT_S,
        )
    finally:
        stop_process_group(process, timeout_s=STOP_TIMEOUT_S)
    printed = log.read_text()
    assert f"Serving on http://127.0.0.1:{port}/" in printed
    assert re.search(r"^  code +[0-9A-Z]{4}-", printed, re.M), printed


def test_make_shell_puts_giftcard_on_the_path() -> None:
    env = {**os.environ, "SHELL": "/bin/sh"}
    env["PATH"] = ":".join(
        part for part in env.get("PATH", "").split(":") if not part.endswith("/.venv/bin")
    )

    result = subprocess.run(
        ["make", "--no-print-directory", "-s", "shell"],
        cwd=ROOT,
        env=env,
        input="command -v giftcard\ngiftcard --help\n",
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{ROOT}/.venv/bin/giftcard" in result.stdout
    assert "Usage: giftcard [OPTIONS] COMMAND [ARGS]..." in result.stdout


async def _expiries(database_url: str) -> list[object]:
    db = Database(database_url)
    try:
        async with db.transaction(write=False) as connection:
            rows = await connection.execute(text("SELECT expires_at FROM cards"))
            return [row[0] for row in rows]
    finally:
        await db.dispose()


def _issue(env: Mapping[str, str], out: Path, *more: str) -> subprocess.CompletedProcess[str]:
    arguments: Sequence[str] = ("--count", "3", "--amount", "20", "--region", "GB")
    return run_cli(env, "cards", "issue", *arguments, "--out", str(out), *more)


def test_expires_writes_the_last_valid_day_and_keeps_the_moment(
    server_database_url: str, tmp_path: Path
) -> None:
    env = base_env(server_database_url)
    assert run_cli(env, "migrate").returncode == 0
    out = tmp_path / "till-cards.csv"

    result = _issue(env, out, "--physical", "--expires", "2099-12-31")

    assert result.returncode == 0, result.stdout + result.stderr
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["expires_at"] for row in rows] == ["2099-12-31"] * 3
    stored = asyncio.run(_expiries(server_database_url))
    assert {str(moment)[:19] for moment in stored} == {"2100-01-01 00:00:00"}


def test_a_past_expiry_is_refused_by_its_option_before_any_progress(tmp_path: Path) -> None:
    database = tmp_path / "cards.db"
    env = base_env(f"sqlite:///{database}")
    out = tmp_path / "cards.csv"

    result = _issue(env, out, "--expires", "2020-01-01")

    assert result.returncode == 1
    assert "--expires 2020-01-01 is in the past" in result.stderr
    assert "expires_at" not in result.stdout + result.stderr
    assert "Issuing" not in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_a_server_of_several_workers_leaves_no_metrics_folder_behind(tmp_path: Path) -> None:
    """The workers' shared metrics folder is the run's own and goes when the server
    stops, so that runs do not pile folders up in the temporary directory."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {**base_env(f"sqlite:///{tmp_path / 'giftcard.db'}"), "TMPDIR": str(temporary)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    with running_server(env, tmp_path / "server.log", workers=2) as server:
        assert httpx.get(f"{server.base_url}/metrics", timeout=10).status_code == 200
        assert [path.name[:17] for path in temporary.iterdir()] == ["giftcard-metrics-"]

    assert list(temporary.iterdir()) == []


def test_a_server_removes_the_metrics_folders_that_ended_servers_left(tmp_path: Path) -> None:
    """A server killed (or stopped with its whole process group, as Ctrl-C on `make run`
    does) cannot remove its metrics folder; the next server removes the folders of
    servers that have ended, and leaves those of servers still running."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    ended = subprocess.Popen(["true"])
    ended.wait()
    left_behind = temporary / f"giftcard-metrics-{ended.pid}-x1y2z3"
    left_behind.mkdir()
    (left_behind / "counter_1234.db").write_bytes(b"")
    running = temporary / f"giftcard-metrics-{os.getpid()}-a1b2c3"
    running.mkdir()
    env = {**base_env(f"sqlite:///{tmp_path / 'giftcard.db'}"), "TMPDIR": str(temporary)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)

    with running_server(env, tmp_path / "server.log", workers=2):
        assert not left_behind.exists()
        assert running.is_dir()

    assert [path.name for path in temporary.iterdir()] == [running.name]


async def _postgres_setting(database_url: str, statement: str) -> str | None:
    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return cast(str | None, await connection.fetchval(statement))
    finally:
        await connection.close()


def test_serve_says_when_the_database_server_lets_its_statistics_go_stale(
    server_database_url: str, tmp_path: Path
) -> None:
    """On PostgreSQL, a server whose tables are never analyzed (no statistics counted
    here, for this database only; autovacuum off, if the test server runs so) is named
    at start, once each; SQLite needs no such upkeep and gets no such line."""
    postgres = server_database_url.startswith("postgresql")
    expected = set()
    if postgres:
        name = server_database_url.rsplit("/", 1)[1]
        asyncio.run(
            _postgres_setting(
                server_database_url, f'ALTER DATABASE "{name}" SET track_counts = off'
            )
        )
        expected.add("track_counts")
        if asyncio.run(_postgres_setting(server_database_url, "SHOW autovacuum")) == "off":
            expected.add("autovacuum")

    with running_server(
        base_env(server_database_url), tmp_path / "server.log", workers=1
    ) as server:
        log = server.log_tail(1_000_000)

    warned = [
        setting
        for setting in ("autovacuum", "track_counts")
        for _ in range(log.count(f"PostgreSQL runs with {setting} off: "))
    ]
    assert sorted(warned) == sorted(expected), log

"""Helpers for end-to-end tests: a real `giftcard serve` process over real HTTP, a fresh
database of each kind for it, and the real CLI.

Everything here is bounded: starting waits for /readyz until a deadline, every CLI call
has a timeout, and stopping a server escalates from SIGTERM to SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET_KEY
from tests.services import free_port

GIFTCARD = Path(sys.executable).with_name("giftcard")
SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 20
CLI_TIMEOUT_S = 120
READY_POLL_INTERVAL_S = 0.1
HTTP_TIMEOUT_S = 30


def base_env(database_url: str, **overrides: str) -> dict[str, str]:
    """The environment for the server and the CLI: the test's database and secret key,
    none of the caller's own GIFTCARD_ settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTCARD_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        GIFTCARD_DATABASE_URL=database_url,
        GIFTCARD_SECRET_KEY=TEST_SECRET_KEY.decode(),
        GIFTCARD_LOG_FORMAT="json",
    )
    env.update(overrides)
    return env


def run_cli(
    env: Mapping[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GIFTCARD), *args],
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def create_api_key(env: Mapping[str, str], role: str = "admin") -> dict[str, str]:
    """`giftcard keys create`; the key is the last line of its output."""
    result = run_cli(env, "keys", "create", "--role", role, "--name", "e2e")
    assert result.returncode == 0, result.stdout + result.stderr
    key = result.stdout.strip().splitlines()[-1].strip()
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def wait_ready(server: Server, deadline: float) -> None:
    """Until `/readyz` answers 200; fails the test when the process ends or time runs out."""
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            response = httpx.get(f"{server.base_url}/readyz", timeout=2)
            if response.status_code == 200:
                return
            last_error = f"/readyz answered {response.status_code}"
        except httpx.HTTPError as error:
            last_error = repr(error)
        time.sleep(READY_POLL_INTERVAL_S)
    pytest.fail(f"the server was not ready in time ({last_error}):\n{server.log_tail()}")


def stop_process_group(
    process: subprocess.Popen[Any], *, timeout_s: float = SERVER_STOP_TIMEOUT_S
) -> None:
    """SIGTERM to the process's own group (a server and its workers, or make and all it
    started), then SIGKILL when it has not ended in time; and SIGKILL to whatever it left
    in its group (a worker would hold the port)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(
    env: Mapping[str, str], log_path: Path, *, workers: int = 2, extra_args: Sequence[str] = ()
) -> Iterator[Server]:
    """`giftcard serve` on a free port, its output in `log_path`; stopped on exit.
    `extra_args` go to `giftcard serve` as well (`--demo`, say)."""
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(GIFTCARD), "serve", "--port", str(port), "--workers", str(workers), *extra_args],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            start_new_session=True,
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_ready(server, time.monotonic() + SERVER_START_TIMEOUT_S)
        yield server
    finally:
        stop_process_group(process)


def issue_cards(
    server: Server, headers: Mapping[str, str], *, amount: int, region: str = "US", count: int = 1
) -> list[dict[str, Any]]:
    """Digital cards through `POST /v1/cards`; each card in the answer carries its code."""
    response = httpx.post(
        f"{server.base_url}/v1/cards",
        json={"amount": amount, "region": region, "kind": "digital", "count": count},
        headers=dict(headers),
        timeout=HTTP_TIMEOUT_S,
    )
    assert response.status_code == 201, response.text
    cards: list[dict[str, Any]] = response.json()["data"]
    return cards


@dataclass
class HttpShopper:
    id: str
    auth: dict[str, str]


async def sign_up_shopper(http: httpx.AsyncClient, email: str, region: str = "US") -> HttpShopper:
    """Sign up a shopper through the real server and log them in."""
    account = {"email": email, "password": "correct horse battery"}
    created = await http.post("/v1/customers", json={**account, "region": region})
    assert created.status_code == 201, created.text
    session = await http.post("/v1/sessions", json=account)
    assert session.status_code == 201, session.text
    return HttpShopper(created.json()["id"], {"Authorization": f"Bearer {session.json()['token']}"})

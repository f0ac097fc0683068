"""`giftcard serve` started while its database does not answer yet (starting, or
restarting beside it, as in the soak) waits for it, for GIFTCARD_DATABASE_WAIT, instead
of exiting at once; past that it stops with a line that says why."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url

from tests.e2e.server import GIFTCARD, base_env, stop_process_group
from tests.round_trips import counting_proxy
from tests.services import free_port

pytestmark = pytest.mark.e2e

READY_TIMEOUT_S = 60
WAITING = "waiting up to 30 s for the database"


def _serve(env: dict[str, str], log: Path, port: int) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(GIFTCARD), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.parametrize("server_database_url", ["postgresql"], indirect=True)
async def test_serve_waits_for_a_database_that_answers_late(
    server_database_url: str, tmp_path: Path
) -> None:
    """Given nothing listening where PostgreSQL should be, when it starts answering only
    after the server said it is waiting for it, then the server migrates and serves. (The
    database starts on the server's word, not after a fixed pause: a server slow to
    start on a busy machine had found it answering already.)"""
    port = free_port()
    late_url = make_url(server_database_url).set(port=port).render_as_string(False)
    env = base_env(late_url, GIFTCARD_DATABASE_WAIT="30s")
    log = tmp_path / "server.log"
    server_port = free_port()
    process = _serve(env, log, server_port)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while WAITING not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            await asyncio.sleep(0.1)
        async with counting_proxy(server_database_url, port=port):
            url = f"http://127.0.0.1:{server_port}"
            deadline = time.monotonic() + READY_TIMEOUT_S
            async with httpx.AsyncClient(timeout=2) as http:
                while True:
                    assert process.poll() is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, log.read_text()[-3000:]
                    try:
                        if (await http.get(f"{url}/readyz")).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    await asyncio.sleep(0.2)
            stop_process_group(process)
    finally:
        stop_process_group(process)
    assert log.read_text().count(WAITING) == 1


def test_serve_gives_up_on_a_database_that_never_answers(tmp_path: Path) -> None:
    """With nothing listening and a wait of one second, the server says it waits, then
    stops with exit status 1 and a line that says the database could not be reached."""
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    env = base_env(url, GIFTCARD_DATABASE_WAIT="1s")
    log = tmp_path / "server.log"
    process = _serve(env, log, free_port())
    try:
        assert process.wait(timeout=60) == 1
    finally:
        stop_process_group(process)
    output = log.read_text()
    assert "waiting up to 1 s for the database" in output
    assert "could not reach the database" in output
    assert "Traceback" not in output

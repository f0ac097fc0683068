"""What the bank workload breaks on purpose: `giftcard serve` on a fixed port, killed with
SIGKILL (the whole process group: the server and its workers) and started again, and a
private PostgreSQL cluster that can be restarted with `pg_ctl restart -m immediate`.

Everything is bounded in time: starting waits for /readyz until a deadline, every
`pg_ctl` call has a timeout, and stopping escalates to SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.e2e.server import GIFTCARD, stop_process_group
from tests.services import ThrowawayPostgres, find_postgres_bindirs, free_port

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 20.0
READY_POLL_INTERVAL_S = 0.05
POSTGRES_OS_USER = "postgres"
# Two servers of three workers, each worker with its pool and overflow, fit with room.
POSTGRES_CONNECTIONS_MAX = 250


class ServerFailed(RuntimeError):
    """A server did not start, or stopped when nobody killed it."""


class KillableServer:
    """`giftcard serve` on one port for its whole life, whatever the kills: clients keep
    one address, as they would behind a load balancer or a service name."""

    def __init__(self, env: Mapping[str, str], name: Path, *, workers: int) -> None:
        """`name` is the path its log and metrics folder are named after."""
        metrics = name.with_name(f"{name.name}-metrics")
        metrics.mkdir(parents=True, exist_ok=True)
        # A folder of its own: a killed server cannot delete the one it would make.
        self.env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}
        self.log_path = name.with_name(f"{name.name}.log")
        self.workers = workers
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.starts = 0
        # Whether clients may be sent to it: from its first answer until it is killed.
        self.up = False
        # Counts kills; an answer sent before the last kill says nothing about the present.
        self.epoch = 0

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(GIFTCARD),
                    "serve",
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_path.parent,
                start_new_session=True,
            )
        self.starts += 1

    async def start(self) -> float:
        """Start the server and return the monotonic moment it answered /readyz."""
        self._spawn()
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        last_error = "no answer yet"
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise ServerFailed(
                        f"the server exited with {self.process.returncode}:\n{self.log_tail()}"
                    )
                try:
                    response = await http.get(f"{self.base_url}/readyz")
                    if response.status_code == 200:
                        return time.monotonic()
                    last_error = f"/readyz answered {response.status_code}"
                except httpx.HTTPError as error:
                    last_error = repr(error)
                await asyncio.sleep(READY_POLL_INTERVAL_S)
        raise ServerFailed(f"the server was not ready in time ({last_error}):\n{self.log_tail()}")

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise ServerFailed(
                f"the server exited by itself with {self.process.returncode}:\n{self.log_tail()}"
            )

    async def kill(self) -> None:
        """SIGKILL to every process of the server at once, as a power cut would."""
        process = self.process
        if process is None:
            return
        self.up = False
        self.epoch += 1
        self.check_alive()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait, SERVER_STOP_TIMEOUT_S)
        self._reap_group(process.pid)
        self.kills += 1
        self.process = None

    @staticmethod
    def _reap_group(pgid: int) -> None:
        """Workers are killed with their parent; make sure none lingers on the port."""
        deadline = time.monotonic() + SERVER_STOP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM to the process group, then SIGKILL; safe to call at any time."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_process_group(process, timeout_s=SERVER_STOP_TIMEOUT_S)
        self._reap_group(process.pid)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL programs on this machine."""


class PrivatePostgres(ThrowawayPostgres):
    """A PostgreSQL cluster of the test's own, so that restarting it disturbs nobody else.

    The test suite's throw-away cluster (tests/services.py), with other settings:
    `fsync=off` keeps it quick, since it is the PostgreSQL *processes* that are crashed
    here, not the machine, and what they wrote stays in the operating system's cache;
    `synchronous_commit` stays on, so a commit PostgreSQL acknowledged is in its WAL
    before the answer leaves, which is what survives an immediate restart; and room for
    every connection of two servers of three workers.
    """

    def __init__(self) -> None:
        bindirs = find_postgres_bindirs()
        if not bindirs:
            raise PostgresUnavailable("initdb and pg_ctl were not found")
        super().__init__(
            bindirs[0],
            os_user=POSTGRES_OS_USER,
            settings=f"-c fsync=off -c max_connections={POSTGRES_CONNECTIONS_MAX}",
        )

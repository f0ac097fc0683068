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
import pwd
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from tests.e2e.server import GIFTCARD, stop_process_group
from tests.services import find_postgres_bindirs, free_port

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 20.0
READY_POLL_INTERVAL_S = 0.05
POSTGRES_TIMEOUT_S = 60
POSTGRES_STOP_TIMEOUT_S = 20
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


class PrivatePostgres:
    """A PostgreSQL cluster of the test's own, so that restarting it disturbs nobody else.

    Made with `initdb` in a temporary folder (owned by the `postgres` user when running
    as root, whose programs then run through `runuser`), listening on a free port on
    127.0.0.1. `fsync=off` keeps it quick: it is the PostgreSQL *processes* that are
    crashed here, not the machine, and what they wrote stays in the operating system's
    cache. `synchronous_commit` stays on, so a commit PostgreSQL acknowledged is in its
    WAL before the answer leaves, which is what survives an immediate restart.
    """

    def __init__(self) -> None:
        bindirs = find_postgres_bindirs()
        if not bindirs:
            raise PostgresUnavailable("initdb and pg_ctl were not found")
        self.bindir = bindirs[0]
        self.tmpdir: Path | None = None
        self.port = 0
        self.url = ""
        self.restarts = 0

    @property
    def data(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "data"

    @property
    def log_path(self) -> Path:
        assert self.tmpdir is not None
        return self.tmpdir / "postgres.log"

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
        if runuser is None:
            raise PostgresUnavailable("running as root without runuser")
        return [runuser, "-u", POSTGRES_OS_USER, "--", *argv]

    def _run(self, *argv: str, timeout: float) -> None:
        assert self.tmpdir is not None
        with (self.tmpdir / "setup.log").open("ab") as out:
            done = subprocess.run(
                self._as_owner([str(self.bindir / argv[0]), *argv[1:]]),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                timeout=timeout,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} {argv[1]} exited with {done.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        assert self.tmpdir is not None
        texts = []
        for name in ("setup.log", "postgres.log"):
            with contextlib.suppress(OSError):
                texts.append((self.tmpdir / name).read_text(errors="replace")[-2000:])
        return "\n".join(texts)

    def start(self) -> str:
        """initdb, start, and return the admin URL."""
        self.tmpdir = Path(tempfile.mkdtemp(prefix="giftcard-bank-pg-", dir="/tmp"))
        try:
            if os.geteuid() == 0:
                owner = pwd.getpwnam(POSTGRES_OS_USER)
                os.chown(self.tmpdir, owner.pw_uid, owner.pw_gid)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                timeout=POSTGRES_TIMEOUT_S,
            )
            self.port = free_port()
            options = (
                f"-h 127.0.0.1 -p {self.port} -k {shlex.quote(str(self.tmpdir))} "
                f"-c fsync=off -c max_connections={POSTGRES_CONNECTIONS_MAX}"
            )
            self._pg_ctl("start", "-o", options)
        except BaseException:
            self.stop()
            raise
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        return self.url

    def _pg_ctl(self, action: str, *extra: str) -> None:
        self._run(
            "pg_ctl",
            action,
            "-D",
            str(self.data),
            "-l",
            str(self.log_path),
            "-w",
            "-t",
            str(POSTGRES_TIMEOUT_S),
            *extra,
            timeout=POSTGRES_TIMEOUT_S + 10,
        )

    def restart(self) -> None:
        """Crash-restart: every PostgreSQL process quits at once, without a checkpoint,
        and the cluster recovers from its WAL when it starts again."""
        self._pg_ctl("restart", "-m", "immediate")
        self.restarts += 1

    def stop(self) -> None:
        """Stop the cluster (immediately) and delete its folder; safe to call twice."""
        if self.tmpdir is None:
            return
        pidfile = self.data / "postmaster.pid"
        if pidfile.exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, OSError):
                self._run(
                    "pg_ctl",
                    "stop",
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "-w",
                    "-t",
                    str(POSTGRES_STOP_TIMEOUT_S),
                    timeout=POSTGRES_STOP_TIMEOUT_S + 5,
                )
        with contextlib.suppress(OSError, ValueError, IndexError):  # the last resort
            os.kill(int(pidfile.read_text().splitlines()[0]), signal.SIGKILL)
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None

"""Test-session services: one PostgreSQL server and one Redis server.

This module is a pytest plugin. Enable it from ``tests/conftest.py`` with
``pytest_plugins = ["tests.services"]`` (preferred, so the hooks below are registered),
or import the fixtures (``from tests.services import postgres_url, redis_url``); in the
latter case the fixtures register this module as a plugin themselves on first use.

Policy, applied separately to PostgreSQL and to Redis, lazily at first use and cached for
the whole session:

1. If the environment variable is set (``GIFTCARD_TEST_POSTGRES_URL``, e.g.
   ``postgresql://postgres@127.0.0.1:5432/postgres``; ``GIFTCARD_TEST_REDIS_URL``, e.g.
   ``redis://127.0.0.1:6379/0``), that server is used. If it does not answer, the tests
   that need it FAIL (they are never skipped): an explicit request must not be ignored.
   An empty value counts as unset.
2. Else, if a server answers on the default local address, it is used:
   ``postgresql://postgres@127.0.0.1:5432/postgres`` (user ``postgres``, trust auth) or
   ``redis://127.0.0.1:6379/0``.
3. Else, if the server binaries exist on this machine, a throw-away server is started
   once per session on a free TCP port on 127.0.0.1, and stopped and deleted when the
   session ends:

   * PostgreSQL: ``initdb``/``pg_ctl``/``postgres`` are looked up in ``PATH`` and then in
     ``/usr/lib/postgresql/*/bin`` (newest version first). The cluster is created in a
     temporary directory with ``initdb -A trust -U postgres`` and started with
     ``fsync=off``. When running as root the binaries run as the ``postgres`` OS user
     (``runuser -u postgres --`` or ``su postgres``) and the directory is chowned to it.
   * Redis: ``redis-server --port <free> --bind 127.0.0.1 --save '' --appendonly no``
     runs as a child process (no daemonizing) and is terminated at the end.

   If the binaries exist but the server cannot be started, the tests FAIL with the
   server's log: a broken local installation must not silently hide tests.
4. Else the tests that need the server are SKIPPED, loudly: a ``pytest`` warning is
   issued and a ``!!! ... SKIPPED ... !!!`` line is printed in the terminal summary.

"Answers" means a TCP connect plus a real protocol round trip (``SELECT 1`` through
asyncpg; ``PING`` through ``redis``), each with a timeout of at most 3 seconds.

Public API:

* fixtures ``postgres_url`` and ``redis_url`` (session scope) return the server URL
  (``postgresql://user@host:port/dbname`` for the admin database; ``redis://host:port/db``)
  or fail/skip according to the policy;
* ``resolve_postgres_url()`` / ``resolve_redis_url()`` return the URL or ``None``, usable
  outside fixtures (for example in ``pytest_collection_modifyitems``);
* ``unavailable_reason(service)`` returns why a service is unavailable (``None`` if it is
  available) and ``get_resolution(service)`` returns the full cached ``Resolution``;
* ``decide(...)`` is the pure decision function behind the policy, and
  ``ThrowawayPostgres`` / ``ThrowawayRedis`` start and stop the throw-away servers.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import enum
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import pytest

__all__ = [
    "POSTGRES",
    "REDIS",
    "Action",
    "Decision",
    "Outcome",
    "ProbeResult",
    "Resolution",
    "ServiceResolver",
    "ServiceUnavailableWarning",
    "ThrowawayPostgres",
    "ThrowawayRedis",
    "decide",
    "find_postgres_bindirs",
    "find_redis_server",
    "free_port",
    "get_resolution",
    "postgres_url",
    "probe_postgres",
    "probe_redis",
    "redis_url",
    "resolve_postgres_url",
    "resolve_redis_url",
    "unavailable_reason",
]

POSTGRES_ENV = "GIFTCARD_TEST_POSTGRES_URL"
REDIS_ENV = "GIFTCARD_TEST_REDIS_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
PROBE_TIMEOUT = 3.0  # seconds, per reachability check
START_TIMEOUT = 30.0  # seconds, to get a throw-away server answering
POSTGRES_LIB_ROOT = Path("/usr/lib/postgresql")


class ServiceUnavailableWarning(pytest.PytestWarning):
    """A test service was not found; the tests that need it are skipped."""


# --------------------------------------------------------------------------------------
# Probes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str = ""


Probe = Callable[[str], ProbeResult]


def redact(url: str) -> str:
    """The URL with any password replaced by ``***`` (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def normalize_postgres_url(url: str) -> str:
    """``postgres://`` and ``postgresql+driver://`` become ``postgresql://``."""
    scheme, sep, rest = url.partition("://")
    if sep and (scheme == "postgres" or scheme.startswith("postgresql+")):
        return f"postgresql://{rest}"
    return url


def _tcp_check(url: str, default_port: int, timeout: float) -> ProbeResult:
    try:
        parts = urlsplit(url)
        host = parts.hostname or "127.0.0.1"
        port = parts.port or default_port
    except ValueError as exc:
        return ProbeResult(False, f"invalid URL: {exc}")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        return ProbeResult(False, f"TCP connect to {host}:{port} failed: {exc}")
    return ProbeResult(True)


def _run_sync(make_coro: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion, even when called from inside a running loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()


def _postgres_ssl_request(url: str, timeout: float) -> ProbeResult:
    """Protocol check without asyncpg: a PostgreSQL server answers SSLRequest with S or N."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 5432), timeout=timeout
        ) as sock:
            sock.sendall((8).to_bytes(4, "big") + (80877103).to_bytes(4, "big"))
            answer = sock.recv(1)
    except OSError as exc:
        return ProbeResult(False, f"SSLRequest failed: {exc}")
    if answer in (b"S", b"N"):
        return ProbeResult(True, "answered SSLRequest (asyncpg not installed)")
    return ProbeResult(False, f"not a PostgreSQL server (SSLRequest answer {answer!r})")


def probe_postgres(url: str, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """TCP connect, then ``SELECT 1`` through asyncpg, within ``timeout`` seconds each."""
    url = normalize_postgres_url(url)
    tcp = _tcp_check(url, 5432, timeout)
    if not tcp.ok:
        return tcp
    try:
        import asyncpg
    except ImportError:
        return _postgres_ssl_request(url, timeout)

    async def select_one() -> Any:
        conn = await asyncio.wait_for(asyncpg.connect(url, timeout=timeout), timeout + 1)
        try:
            return await asyncio.wait_for(conn.fetchval("SELECT 1"), timeout)
        finally:
            await asyncio.wait_for(conn.close(), timeout)

    try:
        value = _run_sync(select_one)
    except Exception as exc:
        return ProbeResult(False, f"SELECT 1 failed: {type(exc).__name__}: {exc}")
    if value != 1:
        return ProbeResult(False, f"SELECT 1 returned {value!r}")
    return ProbeResult(True)


def probe_redis(url: str, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """TCP connect, then ``PING`` through ``redis``, within ``timeout`` seconds each."""
    tcp = _tcp_check(url, 6379, timeout)
    if not tcp.ok:
        return tcp
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            answer = client.ping()
        finally:
            client.close()
    except Exception as exc:
        return ProbeResult(False, f"PING failed: {type(exc).__name__}: {exc}")
    if answer is not True:
        return ProbeResult(False, f"PING returned {answer!r}")
    return ProbeResult(True)


# --------------------------------------------------------------------------------------
# The policy, as a pure function
# --------------------------------------------------------------------------------------


class Action(enum.Enum):
    USE = "use"  # use Decision.url as is
    START = "start"  # start a throw-away server from Decision.binaries
    FAIL = "fail"  # tests needing the service fail with Decision.reason
    SKIP = "skip"  # tests needing the service are skipped (loudly) with Decision.reason


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    url: str | None = None
    binaries: Any = None


def decide(
    env_url: str | None,
    probe: Probe,
    *,
    name: str,
    env_var: str,
    default_url: str,
    binaries: Any = None,
) -> Decision:
    """Apply the policy. ``probe`` is only called on the URLs that matter, in order.

    ``binaries`` is whatever is needed to start a throw-away server (``None`` when no
    binaries were found), or a zero-argument callable returning it, called only when
    nothing answers.
    """
    if env_url is not None and env_url.strip():
        env_url = env_url.strip()
        result = probe(env_url)
        if result.ok:
            return Decision(Action.USE, f"from {env_var}", env_url)
        return Decision(
            Action.FAIL,
            f"{env_var}={redact(env_url)} is set but that {name} server does not answer "
            f"({result.detail}). Start it, fix the variable, or unset it to let the tests "
            f"find or start a server themselves.",
        )
    result = probe(default_url)
    if result.ok:
        return Decision(Action.USE, "found on the default address", default_url)
    if callable(binaries):
        binaries = binaries()
    if binaries is not None:
        return Decision(
            Action.START,
            f"no {name} at {default_url} ({result.detail}); starting a throw-away server",
            binaries=binaries,
        )
    return Decision(
        Action.SKIP,
        f"{name} tests were SKIPPED: no server and no binaries found "
        f"(nothing answers at {default_url}: {result.detail}; set {env_var} to use another "
        f"server)",
    )


# --------------------------------------------------------------------------------------
# Throw-away servers
# --------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _version_key(path: Path) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", path.parent.name)
    return tuple(int(n) for n in numbers) or (-1,)


def _is_postgres_bindir(path: Path) -> bool:
    return all(os.access(path / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))


def find_postgres_bindirs(
    search_path: str | None = None, lib_root: Path = POSTGRES_LIB_ROOT
) -> list[Path]:
    """Directories holding ``initdb``, ``pg_ctl`` and ``postgres``, best first.

    First the one found through ``PATH`` (symlinks resolved, so that Debian's
    ``/usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb`` counts), then
    ``lib_root/*/bin`` by version, newest first.
    """
    found: list[Path] = []
    initdb = shutil.which("initdb", path=search_path)
    if initdb:
        for candidate in (Path(initdb).parent, Path(os.path.realpath(initdb)).parent):
            if _is_postgres_bindir(candidate):
                found.append(candidate)
                break
    with contextlib.suppress(OSError):
        versioned = sorted(lib_root.glob("*/bin"), key=_version_key, reverse=True)
        found.extend(path for path in versioned if _is_postgres_bindir(path))
    unique: list[Path] = []
    for path in found:
        if all(os.path.realpath(path) != os.path.realpath(seen) for seen in unique):
            unique.append(path)
    return unique


def find_redis_server(search_path: str | None = None) -> Path | None:
    """The ``redis-server`` executable from ``PATH`` (or ``/usr/sbin``, ``/usr/local/bin``)."""
    for path in (search_path, "/usr/bin:/usr/sbin:/usr/local/bin"):
        exe = shutil.which("redis-server", path=path)
        if exe:
            return Path(exe)
    return None


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty log)"


class ServiceStartError(RuntimeError):
    """A throw-away server could not be started."""


class _Server(Protocol):
    url: str | None

    def start(self, timeout: float = START_TIMEOUT) -> str: ...

    def stop(self) -> None: ...


def _wait_until_ready(url: str, probe: Probe, deadline: float, alive: Callable[[], bool]) -> str:
    detail = "not tried"
    while time.monotonic() < deadline:
        result = probe(url)
        if result.ok:
            return ""
        detail = result.detail
        if not alive():
            return f"server exited ({detail})"
        time.sleep(0.1)
    return f"timed out ({detail})"


# Settings for a cluster whose contents need not survive anything: the test suite's own.
DISPOSABLE = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


@dataclass
class ThrowawayPostgres:
    """A temporary PostgreSQL cluster: ``initdb`` + ``pg_ctl start``; ``stop`` deletes it.

    `settings` are the server's command-line options beyond where it listens; `restart`
    crash-restarts it, for the tests that prove what survives that."""

    bindir: Path
    os_user: str = "postgres"  # used only when running as root
    settings: str = DISPOSABLE
    url: str | None = None
    tmpdir: Path | None = None
    port: int | None = None
    restarts: int = 0
    _stopped: bool = field(default=False, repr=False)

    def _as_owner(self, argv: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return argv
        runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
        if runuser:
            return [runuser, "-u", self.os_user, "--", *argv]
        return ["su", self.os_user, "-s", "/bin/sh", "-c", shlex.join(argv)]

    def _run(self, argv: list[str], log: Path, timeout: float) -> None:
        assert self.tmpdir is not None
        with log.open("ab") as out:
            proc = subprocess.run(
                self._as_owner(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.tmpdir,
                timeout=timeout,
                check=False,
            )
        if proc.returncode != 0:
            raise ServiceStartError(
                f"{Path(argv[0]).name} exited with {proc.returncode}:\n{_log_tail(log)}"
            )

    def start(self, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        root = os.geteuid() == 0
        # As root, the cluster belongs to the postgres user, who must reach the directory.
        base = "/tmp" if root and os.path.isdir("/tmp") else None
        self.tmpdir = Path(tempfile.mkdtemp(prefix="giftcard-test-pg-", dir=base))
        try:
            if root:
                import pwd

                try:
                    entry = pwd.getpwnam(self.os_user)
                except KeyError:
                    raise ServiceStartError(
                        f"running as root but there is no {self.os_user!r} OS user to own "
                        f"the throw-away cluster"
                    ) from None
                os.chown(self.tmpdir, entry.pw_uid, entry.pw_gid)
            data = self.tmpdir / "data"
            setup_log = self.tmpdir / "setup.log"
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                    "--no-instructions",
                ],
                setup_log,
                timeout=max(deadline - time.monotonic(), 1),
            )
            last_error = ""
            for _attempt in range(3):  # the free port may be taken by the time we bind it
                self.port = free_port()
                options = (
                    f"-h 127.0.0.1 -p {self.port} -k {shlex.quote(str(self.tmpdir))} "
                    f"{self.settings}"
                )
                server_log = self.tmpdir / "postgres.log"
                try:
                    self._run(
                        [
                            str(self.bindir / "pg_ctl"),
                            "start",
                            "-D",
                            str(data),
                            "-l",
                            str(server_log),
                            "-w",
                            "-t",
                            str(max(int(deadline - time.monotonic()), 1)),
                            "-o",
                            options,
                        ],
                        setup_log,
                        timeout=max(deadline - time.monotonic(), 1) + 5,
                    )
                except ServiceStartError as exc:
                    last_error = f"{exc}\n{_log_tail(server_log)}"
                    continue
                url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
                error = _wait_until_ready(
                    url, probe_postgres, deadline, lambda: (data / "postmaster.pid").exists()
                )
                if not error:
                    self.url = url
                    return url
                last_error = f"{error}\n{_log_tail(server_log)}"
                self._pg_ctl_stop()
            raise ServiceStartError(f"PostgreSQL did not start: {last_error}")
        except BaseException:
            self.stop()
            raise

    def restart(self, timeout: float = 2 * START_TIMEOUT) -> None:
        """Crash-restart: every PostgreSQL process quits at once, without a checkpoint,
        and the cluster recovers from its WAL when it starts again (with the options it
        was started with)."""
        assert self.tmpdir is not None
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "restart",
                "-D",
                str(self.tmpdir / "data"),
                "-l",
                str(self.tmpdir / "postgres.log"),
                "-m",
                "immediate",
                "-w",
                "-t",
                str(int(timeout)),
            ],
            self.tmpdir / "setup.log",
            timeout=timeout + 10,
        )
        self.restarts += 1

    def tail(self) -> str:
        """The end of the set-up and server logs, for a failure's message."""
        if self.tmpdir is None:
            return ""
        return "\n".join(_log_tail(self.tmpdir / name) for name in ("setup.log", "postgres.log"))

    def _pg_ctl_stop(self) -> None:
        if self.tmpdir is None:
            return
        data = self.tmpdir / "data"
        pidfile = data / "postmaster.pid"
        if not pidfile.exists():
            return
        with contextlib.suppress(ServiceStartError, subprocess.TimeoutExpired, OSError):
            self._run(
                [str(self.bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
                self.tmpdir / "setup.log",
                timeout=20,
            )
        with contextlib.suppress(OSError, ValueError, IndexError):  # last resort
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, 9)

    def stop(self) -> None:
        """Stop the cluster and delete its directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._pg_ctl_stop()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


@dataclass
class ThrowawayRedis:
    """A temporary ``redis-server`` child process; ``stop`` terminates it."""

    executable: Path
    url: str | None = None
    tmpdir: Path | None = None
    port: int | None = None
    process: subprocess.Popen[bytes] | None = None
    _stopped: bool = field(default=False, repr=False)

    def start(self, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        self.tmpdir = Path(tempfile.mkdtemp(prefix="giftcard-test-redis-"))
        log = self.tmpdir / "redis.log"
        last_error = ""
        try:
            for _attempt in range(3):  # the free port may be taken by the time we bind it
                self.port = free_port()
                argv = [
                    str(self.executable),
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.tmpdir),
                ]
                with log.open("ab") as out:
                    self.process = subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=self.tmpdir,
                        start_new_session=True,  # Ctrl-C goes to pytest, which stops us
                    )
                url = f"redis://127.0.0.1:{self.port}/0"
                error = _wait_until_ready(url, probe_redis, deadline, self._alive)
                if not error:
                    self.url = url
                    return url
                last_error = f"{error}\n{_log_tail(log)}"
                self._terminate()
            raise ServiceStartError(f"redis-server did not start: {last_error}")
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def stop(self) -> None:
        """Terminate the server and delete its directory. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._terminate()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Session-wide resolution (lazy, cached, thread-safe)
# --------------------------------------------------------------------------------------


class Outcome(enum.Enum):
    OK = "ok"
    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Resolution:
    name: str
    outcome: Outcome
    reason: str
    url: str | None = None
    server: _Server | None = None  # the throw-away server we started, if any

    def require(self) -> str:
        """The URL, or ``pytest.fail``/``pytest.skip`` with the reason."""
        if self.outcome is Outcome.OK and self.url is not None:
            return self.url
        if self.outcome is Outcome.FAIL:
            pytest.fail(f"{self.name} unavailable: {self.reason}", pytrace=False)
        pytest.skip(self.reason)


class ServiceResolver:
    """Applies the policy to one service, at most once; owns its throw-away server."""

    def __init__(
        self,
        *,
        name: str,
        env_var: str,
        default_url: str,
        probe: Probe,
        find_binaries: Callable[[], Any],
        make_server: Callable[[Any], _Server],
        normalize: Callable[[str], str] = lambda url: url,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.env_var = env_var
        self.default_url = default_url
        self.probe = probe
        self.find_binaries = find_binaries
        self.make_server = make_server
        self.normalize = normalize
        self.environ = environ  # None means os.environ, read at resolution time
        self._lock = threading.Lock()
        self._resolution: Resolution | None = None

    @property
    def resolution(self) -> Resolution | None:
        """The cached resolution, ``None`` if the service was never asked for."""
        return self._resolution

    def resolve(self) -> Resolution:
        with self._lock:
            if self._resolution is None:
                self._resolution = self._resolve()
                if self._resolution.outcome is Outcome.SKIP:
                    warnings.warn(
                        f"!!! {self._resolution.reason} !!!",
                        ServiceUnavailableWarning,
                        stacklevel=2,
                    )
            return self._resolution

    def _resolve(self) -> Resolution:
        environ = os.environ if self.environ is None else self.environ
        env_url = environ.get(self.env_var)
        decision = decide(
            env_url,
            self.probe,
            name=self.name,
            env_var=self.env_var,
            default_url=self.default_url,
            binaries=self.find_binaries,  # looked up only if nothing answers
        )
        if decision.action is Action.USE:
            assert decision.url is not None
            return Resolution(self.name, Outcome.OK, decision.reason, self.normalize(decision.url))
        if decision.action is Action.FAIL:
            return Resolution(self.name, Outcome.FAIL, decision.reason)
        if decision.action is Action.SKIP:
            return Resolution(self.name, Outcome.SKIP, decision.reason)
        server = self.make_server(decision.binaries)
        try:
            url = server.start()
        except (ServiceStartError, OSError, subprocess.SubprocessError) as exc:
            return Resolution(
                self.name,
                Outcome.FAIL,
                f"{decision.reason}, but it could not be started: {exc}",
            )
        _started.append(server)
        return Resolution(self.name, Outcome.OK, "throw-away server, deleted at exit", url, server)

    def shutdown(self) -> None:
        """Stop the throw-away server, if this resolver started one."""
        with self._lock:
            resolution = self._resolution
            if resolution is not None and resolution.server is not None:
                resolution.server.stop()


_started: list[_Server] = []  # every throw-away server, stopped at exit at the latest


@atexit.register
def _stop_all_servers() -> None:
    while _started:
        with contextlib.suppress(Exception):
            _started.pop().stop()


def _make_postgres_server(bindirs: list[Path]) -> _Server:
    return ThrowawayPostgres(bindirs[0])


def _make_redis_server(executable: Path) -> _Server:
    return ThrowawayRedis(executable)


POSTGRES = ServiceResolver(
    name="PostgreSQL",
    env_var=POSTGRES_ENV,
    default_url=DEFAULT_POSTGRES_URL,
    probe=probe_postgres,
    find_binaries=lambda: find_postgres_bindirs() or None,
    make_server=_make_postgres_server,
    normalize=normalize_postgres_url,
)
REDIS = ServiceResolver(
    name="Redis",
    env_var=REDIS_ENV,
    default_url=DEFAULT_REDIS_URL,
    probe=probe_redis,
    find_binaries=find_redis_server,
    make_server=_make_redis_server,
)
_SERVICES = {"postgres": POSTGRES, "postgresql": POSTGRES, "redis": REDIS}


def get_resolution(service: str) -> Resolution:
    """Resolve ``"postgres"`` or ``"redis"`` (once per session) and return the result."""
    return _SERVICES[service.lower()].resolve()


def resolve_postgres_url() -> str | None:
    """The PostgreSQL admin URL for this session, or ``None`` if unavailable."""
    return POSTGRES.resolve().url


def resolve_redis_url() -> str | None:
    """The Redis URL for this session, or ``None`` if unavailable."""
    return REDIS.resolve().url


def unavailable_reason(service: str) -> str | None:
    """Why ``"postgres"``/``"redis"`` is unavailable (skip or fail), ``None`` if available.

    Use ``get_resolution(service).outcome`` to tell a skip from a failure.
    """
    resolution = get_resolution(service)
    return None if resolution.outcome is Outcome.OK else resolution.reason


# --------------------------------------------------------------------------------------
# pytest fixtures and hooks
# --------------------------------------------------------------------------------------


def _ensure_plugin(config: pytest.Config) -> None:
    """Register this module's hooks when only the fixtures were imported into a conftest."""
    module = sys.modules[__name__]
    if not config.pluginmanager.is_registered(module):
        config.pluginmanager.register(module, "giftcard-test-services")


@pytest.fixture(scope="session")
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``postgresql://user@host:port/dbname`` of the session's PostgreSQL (admin database).

    Fails when ``GIFTCARD_TEST_POSTGRES_URL`` is set but unreachable (or a throw-away
    cluster could not start); skips, loudly, when there is no server and no binaries.
    """
    _ensure_plugin(request.config)
    try:
        yield POSTGRES.resolve().require()
    finally:
        POSTGRES.shutdown()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """``redis://host:port/db`` of the session's Redis.

    Fails when ``GIFTCARD_TEST_REDIS_URL`` is set but unreachable (or a throw-away server
    could not start); skips, loudly, when there is no server and no binary.
    """
    _ensure_plugin(request.config)
    try:
        yield REDIS.resolve().require()
    finally:
        REDIS.shutdown()


def summary_lines(resolutions: list[Resolution]) -> list[tuple[str, dict[str, bool]]]:
    """Terminal-summary lines (text, markup) for the services resolved in this session."""
    lines: list[tuple[str, dict[str, bool]]] = []
    for res in resolutions:
        if res.outcome is Outcome.SKIP:
            lines.append((f"!!! {res.reason} !!!", {"red": True, "bold": True}))
        elif res.outcome is Outcome.FAIL:
            lines.append(
                (f"!!! {res.name} tests FAILED: {res.reason} !!!", {"red": True, "bold": True})
            )
        else:
            assert res.url is not None
            lines.append((f"{res.name}: {redact(res.url)} ({res.reason})", {}))
    return lines


# Under pytest-xdist the services are resolved in the worker processes; each hands its
# summary lines to the controller, which prints them once.
_WORKER_OUTPUT_KEY = "giftcard_services"
_lines_from_workers: list[tuple[str, dict[str, bool]]] = []


def _own_lines() -> list[tuple[str, dict[str, bool]]]:
    resolutions = [r.resolution for r in (POSTGRES, REDIS) if r.resolution is not None]
    return summary_lines(resolutions)


def pytest_sessionfinish(session: pytest.Session) -> None:
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        output[_WORKER_OUTPUT_KEY] = [[text, markup] for text, markup in _own_lines()]


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    for text, markup in getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY, []):
        if (text, markup) not in _lines_from_workers:
            _lines_from_workers.append((text, markup))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = _own_lines() + _lines_from_workers
    if not lines:
        return
    terminalreporter.section("giftcard test services")
    for text, markup in lines:
        terminalreporter.write_line(text, **markup)


def pytest_unconfigure(config: pytest.Config) -> None:
    POSTGRES.shutdown()
    REDIS.shutdown()

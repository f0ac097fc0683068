"""Self-test of the test-services harness (tests/services.py)."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import services
from tests.services import (
    Action,
    Decision,
    Outcome,
    ProbeResult,
    ServiceResolver,
    ThrowawayPostgres,
    ThrowawayRedis,
    decide,
    find_postgres_bindirs,
    find_redis_server,
    probe_postgres,
    probe_redis,
)

UNREACHABLE_POSTGRES = "postgresql://postgres@127.0.0.1:1/postgres"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def _answers(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


# -- the session fixtures ----------------------------------------------------------------


def test_postgres_url_answers_select_1(postgres_url: str) -> None:
    import asyncpg

    parts = urlsplit(postgres_url)
    assert parts.scheme == "postgresql"
    assert parts.hostname
    assert parts.username
    assert parts.path.lstrip("/")

    async def select_one() -> int:
        conn = await asyncpg.connect(postgres_url, timeout=3)
        try:
            return int(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    assert asyncio.run(select_one()) == 1


def test_redis_url_answers_ping(redis_url: str) -> None:
    import redis

    assert urlsplit(redis_url).scheme in {"redis", "rediss", "unix"}
    client = redis.Redis.from_url(redis_url, socket_timeout=3, socket_connect_timeout=3)
    try:
        assert client.ping() is True
    finally:
        client.close()


def test_resolution_is_cached(postgres_url: str, redis_url: str) -> None:
    assert services.resolve_postgres_url() == postgres_url
    assert services.resolve_redis_url() == redis_url
    assert services.get_resolution("postgres") is services.get_resolution("postgres")
    assert services.unavailable_reason("postgres") is None
    assert services.unavailable_reason("redis") is None


# -- the policy ----------------------------------------------------------------------------


def _decide(env_url: str | None, probe, binaries=None) -> Decision:
    return decide(
        env_url,
        probe,
        name="PostgreSQL",
        env_var="GIFTCARD_TEST_POSTGRES_URL",
        default_url="postgresql://postgres@127.0.0.1:5432/postgres",
        binaries=binaries,
    )


def test_unreachable_env_url_fails_instead_of_skipping() -> None:
    # Real probes against a port nobody listens on.
    decision = _decide(UNREACHABLE_POSTGRES, probe_postgres, binaries=["/some/bin"])
    assert decision.action is Action.FAIL
    assert "GIFTCARD_TEST_POSTGRES_URL" in decision.reason
    assert "127.0.0.1:1" in decision.reason

    decision = decide(
        UNREACHABLE_REDIS,
        probe_redis,
        name="Redis",
        env_var="GIFTCARD_TEST_REDIS_URL",
        default_url="redis://127.0.0.1:6379/0",
        binaries=Path("/usr/bin/redis-server"),
    )
    assert decision.action is Action.FAIL
    assert "GIFTCARD_TEST_REDIS_URL" in decision.reason


def test_unreachable_env_url_makes_the_fixture_fail() -> None:
    """Same code path as the session fixtures, on a private resolver."""
    for name, env_var, url, probe in [
        ("PostgreSQL", "GIFTCARD_TEST_POSTGRES_URL", UNREACHABLE_POSTGRES, probe_postgres),
        ("Redis", "GIFTCARD_TEST_REDIS_URL", UNREACHABLE_REDIS, probe_redis),
    ]:
        resolver = ServiceResolver(
            name=name,
            env_var=env_var,
            default_url="unused://",
            probe=probe,
            find_binaries=lambda: pytest.fail("binaries must not be needed"),
            make_server=lambda _bin: pytest.fail("nothing must be started"),
            environ={env_var: url},
        )
        resolution = resolver.resolve()
        assert resolution.outcome is Outcome.FAIL
        assert resolution.url is None
        with pytest.raises(pytest.fail.Exception, match=env_var):
            resolution.require()
        assert resolver.resolve() is resolution  # cached


def test_password_is_redacted_from_messages() -> None:
    decision = _decide(
        "postgresql://app:s3cret@127.0.0.1:1/postgres", lambda _: ProbeResult(False, "down")
    )
    assert decision.action is Action.FAIL
    assert "s3cret" not in decision.reason


def test_policy_order() -> None:
    probed: list[str] = []

    def probe_with(up: set[str]):
        def probe(url: str) -> ProbeResult:
            probed.append(url)
            return ProbeResult(url in up, "" if url in up else "refused")

        return probe

    default = "postgresql://postgres@127.0.0.1:5432/postgres"
    env = "postgresql://postgres@db.example:5432/postgres"

    # The variable wins, and the default is not even probed.
    d = _decide(env, probe_with({env, default}))
    assert (d.action, d.url, probed) == (Action.USE, env, [env])
    # An empty variable counts as unset.
    probed.clear()
    d = _decide("  ", probe_with({default}))
    assert (d.action, d.url, probed) == (Action.USE, default, [default])
    # No variable: the local server.
    d = _decide(None, probe_with({default}))
    assert (d.action, d.url) == (Action.USE, default)
    # Nothing answers, binaries exist: start one.
    d = _decide(None, probe_with(set()), binaries=[Path("/usr/lib/postgresql/15/bin")])
    assert d.action is Action.START
    assert d.binaries == [Path("/usr/lib/postgresql/15/bin")]
    # Nothing at all: skip, loudly worded.
    d = _decide(None, probe_with(set()))
    assert d.action is Action.SKIP
    assert "SKIPPED: no server and no binaries found" in d.reason


def test_skip_is_loud() -> None:
    resolver = ServiceResolver(
        name="Redis",
        env_var="GIFTCARD_TEST_REDIS_URL",
        default_url=UNREACHABLE_REDIS,
        probe=probe_redis,
        find_binaries=lambda: None,
        make_server=lambda _bin: pytest.fail("nothing must be started"),
        environ={},
    )
    with pytest.warns(services.ServiceUnavailableWarning, match="Redis tests were SKIPPED"):
        resolution = resolver.resolve()
    assert resolution.outcome is Outcome.SKIP
    with pytest.raises(pytest.skip.Exception):
        resolution.require()
    [(line, markup)] = services.summary_lines([resolution])
    assert line.startswith("!!! Redis tests were SKIPPED: no server and no binaries found")
    assert markup["red"]


def test_postgres_bindirs_newest_first(tmp_path: Path) -> None:
    for version in ("9.6", "15", "16", "13"):
        bindir = tmp_path / "lib" / version / "bin"
        bindir.mkdir(parents=True)
        for exe in ("initdb", "pg_ctl", "postgres"):
            (bindir / exe).write_text("#!/bin/sh\n")
            (bindir / exe).chmod(0o755)
    (tmp_path / "lib" / "17" / "bin").mkdir(parents=True)  # incomplete: ignored
    found = find_postgres_bindirs(search_path=str(tmp_path / "empty"), lib_root=tmp_path / "lib")
    assert [p.parent.name for p in found] == ["16", "15", "13", "9.6"]

    # What PATH finds comes first, with symlinks resolved to the real bin directory.
    path_dir = tmp_path / "path"
    path_dir.mkdir()
    (path_dir / "initdb").symlink_to(tmp_path / "lib" / "13" / "bin" / "initdb")
    found = find_postgres_bindirs(search_path=str(path_dir), lib_root=tmp_path / "lib")
    assert [p.parent.name for p in found] == ["13", "16", "15", "9.6"]


# -- throw-away servers (bounded: each start gives up after 15 s) --------------------------


def test_throwaway_redis_starts_answers_and_stops() -> None:
    executable = find_redis_server()
    if executable is None:
        pytest.skip("redis-server is not installed")
    server = ThrowawayRedis(executable)
    try:
        url = server.start(timeout=15)
        assert url != services.DEFAULT_REDIS_URL
        assert probe_redis(url).ok
    finally:
        server.stop()
    assert server.tmpdir is not None
    assert not server.tmpdir.exists()
    assert not _answers(url, 6379)
    server.stop()  # idempotent


def test_throwaway_postgres_starts_answers_and_stops() -> None:
    bindirs = find_postgres_bindirs()
    if not bindirs:
        pytest.skip("PostgreSQL server binaries are not installed")
    server = ThrowawayPostgres(bindirs[0])
    try:
        url = server.start(timeout=15)
        assert url != services.DEFAULT_POSTGRES_URL
        assert probe_postgres(url).ok
        if os.geteuid() == 0:
            assert server.tmpdir is not None
            assert (server.tmpdir / "data").stat().st_uid != 0
    finally:
        server.stop()
    assert server.tmpdir is not None
    assert not server.tmpdir.exists()
    assert not _answers(url, 5432)
    server.stop()  # idempotent

"""`make soak`: the bank workload of tests/faults/test_bank.py for minutes rather than
seconds, against two servers of two workers each that share one PostgreSQL (a private
cluster, crash-restarted now and then) and one Redis (the abuse limits), each server
killed with SIGKILL every few seconds; past the minutes asked for until 100 kills were
made (for at most as long again). The result goes to build/soak.json: date, machine,
duration, kills, operations, acknowledged, errors, result.

Run: .venv/bin/python -m tests.faults.soak [--minutes 10] [--out build/soak.json]
Redis is GIFTCARD_TEST_REDIS_URL, else 127.0.0.1:6379, else a throw-away one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from tests.faults.bank import BankSettings, bank_env, run_workload
from tests.faults.processes import PrivatePostgres
from tests.services import resolve_redis_url

MINUTES_DEFAULT = 10.0
SERVERS = 2
WORKERS = 2
CLIENTS = 12
CUSTOMERS = 10
# Seconds between PostgreSQL crash-restarts, on average.
POSTGRES_RESTART_EVERY_S = 150
KILLS_WANTED = 100
PROBLEMS_KEPT_MAX = 50


def machine() -> dict[str, Any]:
    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "system": platform.platform(),
        "python": platform.python_version(),
    }


async def soak(minutes: float) -> dict[str, Any]:
    redis_url = resolve_redis_url()
    if redis_url is None:
        raise SystemExit("soak: no Redis to share between the servers")
    workdir = Path(tempfile.mkdtemp(prefix="giftcard-soak-"))
    postgres = PrivatePostgres()
    started_at = datetime.datetime.now(datetime.UTC)
    try:
        postgres.start()
        connection = await asyncpg.connect(postgres.url, timeout=10)
        try:
            await connection.execute('CREATE DATABASE "soak"')
        finally:
            await connection.close()
        env = bank_env(
            postgres.url.rsplit("/", 1)[0] + "/soak",
            workdir,
            GIFTCARD_REDIS_URL=redis_url,
            # Keys of its own in a Redis others may use too.
            GIFTCARD_LIMIT_KEY_PREFIX=f"soak-{uuid.uuid4().hex[:8]}",
        )
        duration_s = minutes * 60
        settings = BankSettings(
            duration_s=duration_s,
            clients=CLIENTS,
            customers=CUSTOMERS,
            cards=int(max(400, 8 * duration_s)),
            kill_after_s=(0.5, 3.0),
            kills_min=KILLS_WANTED,
            postgres_restarts=max(1, round(duration_s / POSTGRES_RESTART_EVERY_S)),
        )
        outcome = await run_workload(
            env, workdir, settings, servers=SERVERS, workers=WORKERS, postgres=postgres
        )
    finally:
        postgres.stop()
    numbers = outcome.numbers()
    passed = not outcome.report.problems and outcome.verify.returncode == 0
    result = {
        "date": started_at.isoformat(timespec="seconds"),
        "machine": machine(),
        "duration_s": round(outcome.seconds, 1),
        "load_s": duration_s,
        "servers": SERVERS,
        "workers_per_server": WORKERS,
        "clients": CLIENTS,
        **numbers,
        "verify": outcome.verify.stdout.strip().splitlines()[-1:] or [outcome.verify.stderr],
        "problem_list": outcome.report.problems[:PROBLEMS_KEPT_MAX],
        "result": "pass" if passed else "fail",
    }
    if passed:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result["logs"] = str(workdir)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=MINUTES_DEFAULT)
    parser.add_argument("--out", type=Path, default=Path("build/soak.json"))
    args = parser.parse_args()
    result = asyncio.run(soak(args.minutes))
    text = json.dumps(result, indent=2, sort_keys=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)
    if result["kills"] < KILLS_WANTED:
        print(f"soak: only {result['kills']} kills; a full soak has at least {KILLS_WANTED}")
    if result["result"] != "pass":
        print(f"soak: FAILED; server logs kept in {result['logs']}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()

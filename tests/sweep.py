"""After the whole suite: no secret where an operator, a backup or a monitor can read it.

Every test run leaves traces: the log records of the services tests build in-process,
the log files, SQLite databases (with their WAL) and emails of the servers tests start,
all in the suite's temporary folders. This plugin searches all of them, whichever tests
ran, for anything shaped like a secret:

- a full gift card code: sixteen symbols of its alphabet (alone, or in four groups of
  four) whose check symbol fits, which a random string does once in 32 tries;
- a session token or an API key: `gcs_` or `gck_` and the 43 symbols that follow;
- a password reset link's token (`token=` and 43 symbols);
- a password the tests use, as typed or as a form or URL encodes it.

Emails are searched in their headers only: a gift's code belongs in its body, as a reset
link does in the reset email's. SQLite databases are searched value by value, as a dump
would show them (a page's raw bytes run neighbouring columns together: a serial and a
code's last four symbols read as sixteen). A terminal transcript of `make run` is
searched but for the demo's welcome, which shows its codes and key once, on purpose.
Every log record of the `giftcard` loggers is made, at DEBUG, so that nothing a more
verbose server would write escapes the search.

With xdist, each worker searches its own log records and leaves what it found in its
temporary folder; the controller searches the files once every worker has finished, and
the run fails if anything was found, naming where. `tests/e2e/test_secrets_sweep.py`
searches one run for the exact secrets it handled, /metrics and pg_dump included; this
searches everything the suite did for their shapes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from giftcard import codes
from giftcard.demo.seed import DATA_HEADING
from giftcard.errors import RedemptionError

FINDINGS_FILE = "secret-sweep.json"
FINDINGS_SHOWN_MAX = 20
# Files the servers of the tests write, by what they hold.
DATABASE_SUFFIXES = (".db", ".sqlite")  # read with their WAL
LOG_SUFFIXES = (".log",)
MAIL_SUFFIXES = (".eml",)

PASSWORDS = (
    "correct horse battery",
    "staff password 123",
    "a staff passphrase",
    "another staff password 456",
    "a brand new passphrase",
)

_SYMBOL = "[0-9A-HJKMNP-TV-Z]"
_CODE = re.compile(
    rf"(?<![0-9A-Za-z])(?:{_SYMBOL}{{16}}|(?i:{_SYMBOL}{{4}}(?:-{_SYMBOL}{{4}}){{3}}))(?![0-9A-Za-z])"
)
_BEARER = re.compile(r"(?<![0-9A-Za-z_-])gc[sk]_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
_RESET_TOKEN = re.compile(r"token=[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
_PASSWORD = re.compile(
    "|".join(
        re.escape(form)
        for password in PASSWORDS
        for form in {password, quote(password), quote_plus(password)}
    )
)


@dataclass(frozen=True)
class Finding:
    where: str
    kind: str
    excerpt: str  # the secret's first and last symbols only


def secrets_in(text: str) -> Iterator[tuple[str, str]]:
    """(kind, excerpt) for each secret-shaped thing in `text`."""
    for match in _CODE.finditer(text):
        try:
            codes.check_code(match.group())
        except RedemptionError:
            continue
        yield "gift card code", _excerpt(match.group())
    for match in _BEARER.finditer(text):
        kind = "session token" if match.group().startswith("gcs_") else "API key"
        yield kind, _excerpt(match.group())
    for match in _RESET_TOKEN.finditer(text):
        yield "password reset token", _excerpt(match.group())
    for match in _PASSWORD.finditer(text):
        yield "password", _excerpt(match.group())


def _excerpt(secret: str) -> str:
    return f"{secret[:4]}…{secret[-2:]}"


class _LogSearch(logging.Handler):
    """Searches every log record as it is made, its extra fields included."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.findings: list[Finding] = []
        self.test = "(outside a test)"

    def emit(self, record: logging.LogRecord) -> None:
        texts = [record.getMessage()]
        texts += [str(value) for key, value in vars(record).items() if key not in _PLAIN]
        if record.exc_info and record.exc_info[1] is not None:
            texts.append(repr(record.exc_info[1]))
        for text in texts:
            for kind, excerpt in secrets_in(text):
                self.findings.append(
                    Finding(f"log record of {record.name} in {self.test}", kind, excerpt)
                )


# LogRecord attributes that are not what the record says.
_PLAIN = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", None, None)))
    | {"message", "asctime", "taskName", "color_message"}
)

_search = _LogSearch()


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(_search)
    logging.getLogger("giftcard").setLevel(logging.DEBUG)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _search.test = item.nodeid
    try:
        return (yield)
    finally:
        _search.test = "(between tests)"


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    basetemp = config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    if hasattr(config, "workerinput"):
        # An xdist worker: what its log records held goes to the controller.
        (basetemp / FINDINGS_FILE).write_text(
            json.dumps([asdict(finding) for finding in _search.findings])
        )
        return
    findings = list(_search.findings)
    findings += _search_files(basetemp)
    config.stash[_FINDINGS] = findings
    if findings and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    findings = config.stash.get(_FINDINGS, None)
    if findings is None:
        return
    if not findings:
        terminalreporter.write_line("secret sweep: nothing secret-shaped found")
        return
    terminalreporter.section("secret sweep: secrets left where they must not be", red=True)
    for finding in findings[:FINDINGS_SHOWN_MAX]:
        terminalreporter.write_line(f"{finding.kind} {finding.excerpt} in {finding.where}")
    if len(findings) > FINDINGS_SHOWN_MAX:
        terminalreporter.write_line(f"… and {len(findings) - FINDINGS_SHOWN_MAX} more")


_FINDINGS = pytest.StashKey[list[Finding]]()


def _search_files(basetemp: Path) -> list[Finding]:
    findings: list[Finding] = []
    for folder, _, names in os.walk(basetemp):
        for name in names:
            path = Path(folder, name)
            if name == FINDINGS_FILE:
                findings += [Finding(**item) for item in json.loads(path.read_text())]
            elif name.endswith(DATABASE_SUFFIXES):
                findings += _search_database(path, basetemp)
            elif name.endswith(LOG_SUFFIXES):
                findings += _search_log(path, basetemp)
            elif name.endswith(MAIL_SUFFIXES):
                findings += _search_headers(path, basetemp)
    return findings


def _search_log(path: Path, basetemp: Path) -> list[Finding]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    where = str(path.relative_to(basetemp))
    return [Finding(where, kind, excerpt) for kind, excerpt in secrets_in(_without_welcome(lines))]


def _without_welcome(lines: list[str]) -> str:
    """The lines but the demo's welcome: its heading and the indented lines under it."""
    kept = []
    in_welcome = False
    for line in lines:
        if line == DATA_HEADING:
            in_welcome = True
        elif in_welcome and not line.startswith("  "):
            in_welcome = False
        if not in_welcome:
            kept.append(line)
    return "\n".join(kept)


def _search_database(path: Path, basetemp: Path) -> list[Finding]:
    where = str(path.relative_to(basetemp))
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return _search_bytes(path, where)
    findings = []
    try:
        tables = [
            name
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            quoted = table.replace('"', '""')
            for row in connection.execute(f'SELECT * FROM "{quoted}"'):
                for value in row:
                    if isinstance(value, bytes):
                        value = value.decode("latin-1")
                    if isinstance(value, str):
                        findings += [
                            Finding(f"{where}, table {table}", kind, excerpt)
                            for kind, excerpt in secrets_in(value)
                        ]
    except sqlite3.DatabaseError:
        return _search_bytes(path, where)
    finally:
        connection.close()
    return findings


def _search_bytes(path: Path, where: str) -> list[Finding]:
    """A file that is not a database after all, searched as it is."""
    try:
        # Latin-1 reads any bytes; every shape searched for is ASCII.
        text = path.read_bytes().decode("latin-1")
    except OSError:
        return []
    return [Finding(where, kind, excerpt) for kind, excerpt in secrets_in(text)]


def _search_headers(path: Path, basetemp: Path) -> list[Finding]:
    try:
        message = BytesHeaderParser(policy=default_policy).parsebytes(path.read_bytes())
    except OSError:
        return []
    headers = "\n".join(f"{key}: {value}" for key, value in message.items())
    where = f"headers of {path.relative_to(basetemp)}"
    return [Finding(where, kind, excerpt) for kind, excerpt in secrets_in(headers)]

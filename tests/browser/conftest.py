"""Fixtures for browser tests: a real server for each test module, Chromium driven by
Playwright, and `tabs` that open checked pages (see `browsing.Tab`).

After each test that passed, every tab must still be free of JavaScript errors, and every
page the browser navigated to must have been checked by `Tab.arrive`.

Chromium is Debian's, at /usr/bin/chromium. Without it the browser tests FAIL in CI (`CI`
or `GIFTCARD_TEST_POSTGRES_URL` set) and are skipped loudly everywhere else.

Playwright's sync API marks its own event loop as running in this thread while it is
started, so it lives for one module at a time and never while async tests run.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Playwright, expect, sync_playwright

from tests.browser.browsing import ACTION_TIMEOUT_MS, Live, Tabs
from tests.e2e.server import base_env, create_api_key, running_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAUNCH_TIMEOUT_MS = 30_000

expect.set_options(timeout=ACTION_TIMEOUT_MS)

_call_passed = pytest.StashKey[bool]()
_skip_reasons: list[str] = []


class BrowserUnavailableWarning(UserWarning):
    """The browser tests could not run on this machine."""


def _in_ci() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("GIFTCARD_TEST_POSTGRES_URL"))


def _require_chromium() -> None:
    if CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK):
        return
    missing = f"no Chromium at {CHROMIUM} (install Debian's chromium package)"
    if _in_ci():
        pytest.fail(f"browser tests cannot run in CI: {missing}", pytrace=False)
    reason = f"browser tests were SKIPPED: {missing}"
    if reason not in _skip_reasons:
        _skip_reasons.append(reason)
        warnings.warn(f"!!! {reason} !!!", BrowserUnavailableWarning, stacklevel=2)
    pytest.skip(f"!!! {reason} !!!")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for reason in _skip_reasons:
        terminalreporter.write_line(f"!!! {reason} !!!", red=True, bold=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_call_passed] = report.passed
    return report


@pytest.fixture(scope="module")
def driver() -> Iterator[Playwright]:
    _require_chromium()
    started = sync_playwright().start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def browser(driver: Playwright) -> Iterator[Browser]:
    launched = driver.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
    )
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A `giftcard serve` process on a fresh SQLite database, for one test module, with
    the demo store on (the journeys shop in it)."""
    folder = tmp_path_factory.mktemp("browser")
    env = base_env(f"sqlite:///{folder / 'giftcard.db'}", GIFTCARD_DEMO_STORE="true")
    with running_server(env, folder / "server.log", workers=1) as server:
        yield Live(server, create_api_key(env))


@pytest.fixture
def tabs(
    browser: Browser, live: Live, request: pytest.FixtureRequest
) -> Generator[Tabs, None, None]:
    opened = Tabs(browser, live.base_url)
    yield opened
    problems: list[str] = []
    try:
        if request.node.stash.get(_call_passed, False):
            for tab in opened.opened:
                problems += [f"{tab.shots.prefix}: {error}" for error in tab.errors()]
                if tab.unchecked:
                    problems.append(f"{tab.shots.prefix}: pages never checked: {tab.unchecked}")
    finally:
        opened.close()
    assert not problems, "\n".join(problems)

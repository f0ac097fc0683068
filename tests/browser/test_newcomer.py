"""A newcomer's first hour, in one test, as the README tells it: `make run` on a port
that is busy fails at once and says what to do, `make run PORT=…` serves the demo and
prints codes; in a browser the newcomer signs up and redeems a printed code; a German
shopper, with a card issued through the API key the demo printed, pays part of an order
with `10,50` typed the German way, then refunds part of it after a confirmation step.

The server is `make run` itself, from the repository's Makefile, with its database in a
fresh temporary folder (GIFTCARD_DATABASE_URL) so that nothing in the checkout changes.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.browser.browsing import Tab, Tabs, new_email, sign_up, summary_value, usd
from tests.e2e.server import (
    HTTP_TIMEOUT_S,
    Server,
    stop_process_group,
    wait_ready,
)
from tests.services import free_port

pytestmark = pytest.mark.e2e

REPOSITORY = Path(__file__).resolve().parents[2]
# `make run` on a busy port must give up before migrating, seeding or printing anything.
BUSY_FAIL_TIMEOUT_S = 30
SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 20
ANY_CODE = re.compile(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b")
PRINTED_CODE = re.compile(r"^\s+code\s+(\S{4}-\S{4}-\S{4}-\S{4})\s+\$25\.00$", re.MULTILINE)
PRINTED_API_KEY = re.compile(r"^\s+API key\s+(\S+) \(admin\)$", re.MULTILINE)
GERMAN_BALANCE_MINOR = 5000  # 50,00 €; the poster costs 28,00 €.
# Babel writes a no-break space before the euro sign; \s matches it.
EURO = r"\s€"


def newcomer_env(folder: Path) -> dict[str, str]:
    """The caller's environment without any GIFTCARD_ setting but the database, which
    lives in `folder` (with the secret key and the mail the demo makes beside it)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTCARD_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env["GIFTCARD_DATABASE_URL"] = f"sqlite:///{folder / 'giftcard.db'}"
    return env


def make_run(port: int) -> list[str]:
    # The virtual environment is there already (the tests run in it): `--old-file` keeps
    # make from reinstalling it when pyproject.toml is newer than its stamp.
    return ["make", "-C", str(REPOSITORY), "--old-file=.venv/.installed", "run", f"PORT={port}"]


@contextlib.contextmanager
def port_held_busy() -> Iterator[int]:
    """A port on 127.0.0.1 with a socket listening on it, as another program would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        yield int(holder.getsockname()[1])


@contextlib.contextmanager
def make_running(port: int, folder: Path, env: dict[str, str]) -> Iterator[Path]:
    """`make run PORT=port` in a process group of its own, its output in a file whose
    path is yielded once the server answers /readyz; the whole group (make, the server
    and its workers) is stopped on exit, SIGTERM then SIGKILL, each wait bounded."""
    log_path = folder / "make-run.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            make_run(port),
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(
            Server(f"http://127.0.0.1:{port}", process, log_path),
            time.monotonic() + SERVER_START_TIMEOUT_S,
        )
        yield log_path
    finally:
        stop_process_group(process, timeout_s=SERVER_STOP_TIMEOUT_S)


@contextlib.contextmanager
def checked_tabs(browser: Browser, base_url: str) -> Iterator[Tabs]:
    """Tabs on `base_url`; when the block ends without error, every tab must be free of
    JavaScript errors and every page it showed checked by `Tab.arrive` (as the `tabs`
    fixture does for a server started by a fixture)."""
    opened = Tabs(browser, base_url)
    try:
        yield opened
        problems: list[str] = []
        for tab in opened.opened:
            problems += [f"{tab.shots.prefix}: {error}" for error in tab.errors()]
            if tab.unchecked:
                problems.append(f"{tab.shots.prefix}: pages never checked: {tab.unchecked}")
        assert not problems, "\n".join(problems)
    finally:
        opened.close()


def issue_german_card(base_url: str, api_key: str) -> str:
    """A 50,00 € card of the Germany store, issued with the demo's printed admin key as
    the README's curl example does; its code."""
    issued = httpx.post(
        f"{base_url}/v1/cards",
        json={"amount": GERMAN_BALANCE_MINOR, "region": "DE", "kind": "digital"},
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=HTTP_TIMEOUT_S,
    )
    assert issued.status_code == 201, issued.text
    code: str = issued.json()["data"][0]["code"]
    return code


def redeem(tab: Tab, code: str, added: str | re.Pattern[str]) -> None:
    tab.field("Gift card code").fill(code)
    with tab.navigation("redeemed"):
        tab.button("Redeem").click()
    expect(tab.flash()).to_contain_text(added)


def test_a_newcomer_runs_make_run_signs_up_redeems_and_a_german_shopper_pays_and_refunds(
    browser: Browser, tmp_path: Path
) -> None:
    assert shutil.which("make"), "make is not installed"
    assert (REPOSITORY / ".venv" / "bin" / "giftcard").exists(), "run `make` first"
    env = newcomer_env(tmp_path)

    # A busy port: make run fails at once, says which port and how to pick another, and
    # prints no demo code (nor makes a database) that nobody could use.
    with port_held_busy() as busy:
        started = time.monotonic()
        refused = subprocess.run(
            make_run(busy),
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUSY_FAIL_TIMEOUT_S,
            check=False,
        )
        took_s = time.monotonic() - started
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert f"port {busy}" in said, said
    assert "make run PORT=" in said, said
    assert not ANY_CODE.search(said), f"demo codes printed for a busy port:\n{said}"
    assert "Demo data" not in said, said
    assert not (tmp_path / "giftcard.db").exists(), "a busy port still made a database"
    assert took_s < BUSY_FAIL_TIMEOUT_S / 2, f"make run took {took_s:.1f}s to give up"

    port = free_port()
    with make_running(port, tmp_path, env) as log_path:
        printed = log_path.read_text()
        assert "in a browser: sign up" in printed, "the demo does not say where to start"
        code = PRINTED_CODE.search(printed)
        assert code, f"no $25.00 code printed by make run:\n{printed[-2000:]}"
        api_key = PRINTED_API_KEY.search(printed)
        assert api_key, f"no API key printed by make run:\n{printed[-2000:]}"
        base_url = f"http://127.0.0.1:{port}"

        with checked_tabs(browser, base_url) as tabs:
            # The newcomer: from the home page only, an account and a printed code.
            newcomer = tabs.open("newcomer")
            newcomer.goto("/", "home")
            with newcomer.navigation("signup"):
                newcomer.link("Create an account").click()
            sign_up(newcomer, new_email("newcomer"), step="account")
            expect(newcomer.heading()).to_have_text("Your Gift Cards")
            redeem(newcomer, code.group(1), f"{usd(2500)} was added to your balance.")
            expect(newcomer.available()).to_have_text(usd(2500))

            german_card = issue_german_card(base_url, api_key.group(1))
            pays_in_german(tabs.open("newcomer-de"), german_card)


def pays_in_german(tab: Tab, code: str) -> None:
    """A shopper of the Germany store redeems a card, pays 10,50 € of a 28,00 € poster
    with the balance, then refunds 12,00 € of it, confirmed first: the balance's part
    comes back to the balance, the rest to the test card."""
    page = tab.page
    tab.goto("/signup", "signup")
    sign_up(tab, new_email("german"), region="DE", step="account")
    redeem(tab, code, re.compile(rf"50,00{EURO} was added to your balance\."))

    tab.goto("/store", "store")
    poster = page.locator("ul.products li", has_text="Screen-printed poster")
    with tab.navigation("store-added"):
        poster.get_by_role("button", name="Add to cart").click()
    tab.goto("/store/checkout", "checkout")
    page.get_by_label("Use a chosen amount").check()
    tab.field("Amount from your balance").fill("10,50")
    with tab.navigation("order-placed"):
        tab.button("Place order").click()
    expect(tab.heading()).to_have_text("Thank you for your order")
    expect(summary_value(tab, "Paid with gift card balance")).to_have_text(
        re.compile(rf"^10,50{EURO}$")
    )
    expect(summary_value(tab, "Charged to test card")).to_have_text(re.compile(rf"^17,50{EURO}$"))

    with tab.navigation("refund"):
        tab.link("Request refund").click()
    tab.field("Amount to refund").fill("12,00")
    with tab.navigation("refund-confirm"):
        tab.button("Review refund").click()
    expect(tab.heading()).to_have_text("Confirm your refund")
    expect(summary_value(tab, "To your gift card balance")).to_have_text(
        re.compile(rf"^10,50{EURO}$")
    )
    expect(summary_value(tab, "To your test card")).to_have_text(re.compile(rf"^1,50{EURO}$"))
    with tab.navigation("refunded"):
        tab.button("Confirm refund").click()
    expect(tab.flash()).to_have_text(
        re.compile(
            rf"^\s*Refunded 12,00{EURO}: 10,50{EURO} to your gift card balance, "
            rf"1,50{EURO} to your test card\.\s*$"
        )
    )
    expect(page.get_by_test_id("status")).to_have_text("Partly refunded")

    with tab.navigation("account-after-refund"):
        tab.nav("Your Gift Cards").click()
    expect(tab.available()).to_have_text(re.compile(rf"^50,00{EURO}$"))

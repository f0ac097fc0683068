"""Email settings and the folder transport: a bad GIFTCARD_SMTP_URL stops the start with
a message naming the variable (never its password); without an SMTP server each email is
written whole into GIFTCARD_MAIL_DIR and announced in the log, its words kept out of it.
"""

from __future__ import annotations

import email
import email.policy
import logging
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from giftcard.clock import FrozenClock
from giftcard.config import ConfigError, Settings, load_settings, parse_smtp_url
from giftcard.mail import sender
from giftcard.mail.test_message import queue_test_email
from giftcard.mail.transport import announcement
from giftcard.services import Services


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://mail.example.com", "must start with smtp:// or smtps://"),
        ("mail.example.com:25", "must start with smtp:// or smtps://"),
        ("smtp://", "must be a server's address"),
        ("smtp://mail.example.com/inbox", "must be a server's address"),
        ("smtp://mail.example.com:99999", "must be an address"),
        ("smtps://:s3cret-password@mail.example.com", "has a password but no user name"),
    ],
)
def test_a_bad_smtp_url_stops_the_start_naming_the_variable(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"GIFTCARD_SMTP_URL": url})

    assert "GIFTCARD_SMTP_URL" in str(refused.value)
    assert words in str(refused.value)
    assert "s3cret-password" not in str(refused.value)


def test_an_smtp_url_is_read_with_its_defaults_and_decoded_credentials() -> None:
    plain = parse_smtp_url("smtp://mail.example.com")
    secure = parse_smtp_url("smtps://ada%40example.com:p%40ss%2Fw%3Ard@mail.example.com:2465")

    assert (plain.host, plain.port, plain.implicit_tls, plain.username) == (
        "mail.example.com",
        25,
        False,
        None,
    )
    assert (secure.port, secure.implicit_tls) == (2465, True)
    assert (secure.username, secure.password) == ("ada@example.com", "p@ss/w:rd")
    assert secure.address == "smtps://mail.example.com:2465"
    assert "p@ss" not in repr(secure)


def test_the_claim_must_outlast_the_smtp_timeout() -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({"GIFTCARD_MAIL_CLAIM_TTL": "30s", "GIFTCARD_SMTP_TIMEOUT": "30s"})

    assert "GIFTCARD_MAIL_CLAIM_TTL" in str(refused.value)
    assert "GIFTCARD_SMTP_TIMEOUT" in str(refused.value)


def test_where_mail_goes_is_said_without_the_password(tmp_path: Path) -> None:
    with_smtp = load_settings({"GIFTCARD_SMTP_URL": "smtp://ada:s3cret@mail.example.com:587"})
    without = load_settings({"GIFTCARD_DATABASE_URL": f"sqlite:///{tmp_path}/shop.db"})

    assert announcement(with_smtp) == "Emails go to smtp://mail.example.com:587"
    assert announcement(without) == f"Emails are written to {tmp_path / 'mail'}"


async def test_without_smtp_each_email_is_written_to_the_folder_and_announced(
    settings: Settings,
    clock: FrozenClock,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Given no SMTP server and a mail folder that does not exist yet, delivering
    creates it and writes the email there whole (owner-readable only, no temporary file
    left), and the log says where, naming the recipient but no word of the email."""
    folder = tmp_path / "outgoing" / "mail"
    services = Services.build(replace(settings, smtp_url=None, mail_dir=folder), clock=clock)
    try:
        queued = await queue_test_email(services.unit_of_work(), "ada@example.com")
        with caplog.at_level(logging.INFO):
            assert await sender.deliver_due(services) == 1
    finally:
        await services.close()

    [path] = folder.iterdir()
    assert path.name == f"{clock.now():%Y%m%d-%H%M%S}-{queued.id}.eml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert written["Message-ID"] == queued.message_id
    assert written["To"] == "ada@example.com"
    announced = [r.getMessage() for r in caplog.records if r.name == "giftcard.mail.transport"]
    assert announced == [f"Email to ada@example.com written to {path}"]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "emails from this service reach you" not in logged
    assert "Test email from giftcard" not in logged  # not even the subject

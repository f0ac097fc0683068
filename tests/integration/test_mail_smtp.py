"""The SMTP transport against a real server (aiosmtpd): STARTTLS when offered and TLS
from the start, each with AUTH from the URL's percent-encoded user and password, the
server's certificate checked (an untrusted one is refused, not ignored), and every kind
of failure turned into a reason worth showing to support."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import quote

import pytest

from giftcard.config import parse_smtp_url
from giftcard.mail.transport import DeliveryFailed, SmtpTransport
from tests.mail_server import Certificate, self_signed_certificate, smtp_server
from tests.services import free_port

USER = "mail user@example.com"
PASSWORD = "p@ss:w/rd% ünï"
NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def trusted(certificate: Certificate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's certificate trusted as the default SSL context trusts any authority."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.cert))


def _email() -> EmailMessage:
    email = EmailMessage()
    email["From"] = "giftcard <giftcard@localhost>"
    email["To"] = "ada@example.com"
    email["Subject"] = "Hello"
    email["Message-ID"] = "<transport-test@giftcard.invalid>"
    email.set_content("hello")
    return email


def _url(scheme: str, port: int, user: str = USER, password: str = PASSWORD) -> str:
    return f"{scheme}://{quote(user, safe='')}:{quote(password, safe='')}@127.0.0.1:{port}"


async def _send(url: str, timeout_s: float = 10) -> None:
    transport = SmtpTransport(parse_smtp_url(url), timeout_s=timeout_s)
    await transport.send(_email(), outbox_id=1, now=NOW)


@pytest.mark.usefixtures("trusted")
async def test_starttls_then_login_from_the_url(certificate: Certificate) -> None:
    """Given a server that offers STARTTLS and requires it, and AUTH only over TLS, an
    smtp:// URL upgrades the connection and logs in with its percent-decoded user and
    password."""
    with smtp_server(starttls=certificate, login=(USER, PASSWORD)) as server:
        await _send(_url("smtp", server.port))

    [received] = server.recorder.received
    assert received.over_tls
    assert received.user == USER
    assert received.message_id == "<transport-test@giftcard.invalid>"


@pytest.mark.usefixtures("trusted")
# aiosmtpd counts only STARTTLS as TLS, and warns of AUTH "without" it over smtps.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_smtps_speaks_tls_from_the_start_and_logs_in(certificate: Certificate) -> None:
    """An smtps:// URL opens TLS before the first SMTP word, then logs in."""
    with smtp_server(implicit_tls=certificate, login=(USER, PASSWORD)) as server:
        await _send(_url("smtps", server.port))

    [received] = server.recorder.received
    assert received.user == USER


@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
async def test_an_untrusted_certificate_is_refused(certificate: Certificate, scheme: str) -> None:
    """Without the certificate among the trusted authorities, neither STARTTLS nor
    smtps goes ahead: the email is not handed over, and the reason says TLS failed."""
    tls = {"starttls": certificate} if scheme == "smtp" else {"implicit_tls": certificate}
    with smtp_server(**tls) as server, pytest.raises(DeliveryFailed) as failure:
        await _send(f"{scheme}://127.0.0.1:{server.port}")

    assert server.recorder.received == []
    assert "certificate verify failed" in failure.value.reason.lower()


@pytest.mark.usefixtures("trusted")
async def test_a_wrong_password_is_a_reason_naming_the_server_not_the_password(
    certificate: Certificate,
) -> None:
    with (
        smtp_server(starttls=certificate, login=(USER, PASSWORD)) as server,
        pytest.raises(DeliveryFailed) as failure,
    ):
        await _send(_url("smtp", server.port, password="not-the-password"))

    assert failure.value.reason.startswith(f"smtp://127.0.0.1:{server.port} answered 535")
    assert "not-the-password" not in failure.value.reason
    assert server.recorder.received == []


@pytest.fixture
async def silent_server() -> AsyncIterator[int]:
    """A server that accepts connections and never says a word."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    port = free_port()
    server = await asyncio.start_server(accept, "127.0.0.1", port)
    yield port
    for writer in connections:
        writer.close()
    server.close()
    await server.wait_closed()


async def test_a_server_that_does_not_answer_times_out(silent_server: int) -> None:
    """A server that stalls costs at most the timeout, then a reason saying so."""
    started = asyncio.get_running_loop().time()
    with pytest.raises(DeliveryFailed) as failure:
        await _send(f"smtp://127.0.0.1:{silent_server}", timeout_s=1)

    assert asyncio.get_running_loop().time() - started < 5
    assert failure.value.reason == f"smtp://127.0.0.1:{silent_server} did not finish within 1s"


def test_the_certificate_folder_is_the_tests_own(certificate: Certificate) -> None:
    """The certificate is made fresh for the tests (no key is kept in the repository)."""
    assert Path(certificate.cert).is_file()
    assert not str(certificate.cert).startswith(str(Path(__file__).parents[2]))


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
async def test_a_password_is_never_sent_without_tls() -> None:
    """Given a server that offers no STARTTLS (or one whose offer was struck out on the
    way), an smtp:// URL with a password does not log in in the clear: the email is
    not handed over, and the reason says STARTTLS was missing."""
    with (
        smtp_server(login=(USER, PASSWORD)) as server,
        pytest.raises(DeliveryFailed) as failure,
    ):
        await _send(_url("smtp", server.port))

    assert "STARTTLS" in failure.value.reason
    assert server.recorder.received == []

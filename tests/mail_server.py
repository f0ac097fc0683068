"""A real SMTP server for the email tests: aiosmtpd in a thread of the test process,
recording every message it accepts, answering as a test tells it to, with STARTTLS,
TLS from the start and AUTH when asked; and a self-signed certificate to serve them.

Tests trust the certificate by pointing SSL_CERT_FILE at it, which the default SSL
context honours: the code under test keeps verifying certificates as in production.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import ssl
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.services import free_port

OPENSSL_TIMEOUT_S = 60


@dataclass(frozen=True)
class Received:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    over_tls: bool
    user: str | None

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


@dataclass
class Recorder:
    """The server's handler: records what it accepts. `answers` holds refusals to give,
    one per message, at the step named ("RCPT" or "DATA"), e.g. ("DATA", "451 4.3.0
    Try again later"); `on_accept(received)` runs after a message is recorded and
    before the server answers 250."""

    received: list[Received] = field(default_factory=list)
    answers: deque[tuple[str, str]] = field(default_factory=deque)
    on_accept: Callable[[Received], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse_next(self, step: str, answer: str) -> None:
        self.answers.append((step, answer))

    def _refusal(self, step: str) -> str | None:
        with self.lock:
            if self.answers and self.answers[0][0] == step:
                return self.answers.popleft()[1]
        return None

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        refusal = self._refusal("RCPT")
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        refusal = self._refusal("DATA")
        if refusal:
            return refusal
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        auth = session.auth_data
        received = Received(
            sender=envelope.mail_from,
            recipients=list(envelope.rcpt_tos),
            message=parsed,
            # STARTTLS sets `session.ssl`; TLS from the start shows on the transport.
            over_tls=session.ssl is not None
            or server.transport.get_extra_info("sslcontext") is not None,
            user=auth.login.decode() if isinstance(auth, LoginPassword) else None,
        )
        with self.lock:
            self.received.append(received)
        if self.on_accept is not None:
            self.on_accept(received)
        return "250 OK"

    def message_ids(self) -> list[str]:
        with self.lock:
            return [item.message_id for item in self.received]


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


def self_signed_certificate(folder: Path) -> Certificate:
    """A certificate for 127.0.0.1 and localhost, signed by itself, made by openssl."""
    cert, key = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=OPENSSL_TIMEOUT_S,
    )
    return Certificate(cert, key)


def password_checker(user: str, password: str) -> Callable[..., AuthResult]:
    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        good = isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode(),
            auth_data.password.decode(),
        ) == (user, password)
        return AuthResult(success=good, handled=False, auth_data=auth_data)

    return authenticate


@dataclass
class SmtpServer:
    recorder: Recorder
    port: int

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"


@contextlib.contextmanager
def smtp_server(
    *,
    starttls: Certificate | None = None,
    implicit_tls: Certificate | None = None,
    login: tuple[str, str] | None = None,
) -> Iterator[SmtpServer]:
    """An SMTP server on 127.0.0.1: plain; with STARTTLS required before any mail
    (`starttls`); or TLS from the start (`implicit_tls`); requiring AUTH with `login`."""
    recorder = Recorder()
    options: dict[str, Any] = {}
    if starttls is not None:
        options.update(tls_context=starttls.server_context(), require_starttls=True)
    if implicit_tls is not None:
        options.update(ssl_context=implicit_tls.server_context())
    if login is not None:
        # AUTH over TLS only where STARTTLS is offered: aiosmtpd sees only STARTTLS as
        # TLS, so over TLS from the start (or on a plain test server) it must be told
        # that AUTH is fine without it.
        options.update(
            authenticator=password_checker(*login),
            auth_required=True,
            auth_require_tls=starttls is not None,
        )
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield SmtpServer(recorder, port)
    finally:
        controller.stop()

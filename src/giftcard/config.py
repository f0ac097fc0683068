"""Settings, read once from the environment (every variable is documented in README.md)."""

from __future__ import annotations

import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from limits import parse as parse_limit

log = logging.getLogger(__name__)

DEFAULT_DATABASE_URL = "sqlite:///giftcard.db"
# Read by every worker process; `giftcard serve --demo` sets it for them.
DEMO_STORE_SETTING = "GIFTCARD_DEMO_STORE"
SECRET_KEY_BYTES_MIN = 32

_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)?\s*$")
_DURATION_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


class ConfigError(Exception):
    """A setting is missing or malformed; the message names the variable."""


def parse_duration_s(name: str, text: str) -> int:
    """`90`, `90s`, `15m`, `12h`, `7d` → seconds."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(f"{name} must be a duration such as 90s, 15m, 12h or 7d, not {text!r}")
    return int(match.group(1)) * _DURATION_UNIT_S[match.group(2)]


def _limit(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip()
    try:
        parse_limit(value)
    except ValueError as error:
        raise ConfigError(
            f"{name} must be in the limits notation N/period, not {value!r}"
        ) from error
    return value


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text not in _TRUE + _FALSE:
        raise ConfigError(f"{name} must be true or false, not {env[name]!r}")
    return text in _TRUE


_KEY_PREFIX = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _key_prefix(text: str) -> str:
    prefix = text.strip()
    if not _KEY_PREFIX.match(prefix):
        raise ConfigError(
            "GIFTCARD_LIMIT_KEY_PREFIX must be 1 to 64 letters, digits, '.', '_' or '-', "
            f"not {text!r}"
        )
    return prefix


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    text = env.get(name)
    if text is None or text.strip() == "":
        return default
    if not text.strip().isdigit() or int(text) < minimum:
        raise ConfigError(f"{name} must be a whole number of at least {minimum}, not {text!r}")
    return int(text)


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    secret_key: bytes = field(default=b"", repr=False)
    redis_url: str | None = None
    smtp_url: str | None = None
    session_ttl_s: int = 7 * 86400
    hold_ttl_s: int = 7 * 86400
    # How long `giftcard serve` waits at start for a database that does not answer yet.
    database_wait_s: int = 30
    # PostgreSQL isolation: None keeps the server's default (READ COMMITTED).
    database_isolation: str | None = None
    limit_redeem_failures_account: str = "10/15minutes"
    limit_redeem_failures_address: str = "50/15minutes"
    # Codes that pass the check symbol and match no card, for the whole service: the one
    # bound on a guesser with any number of addresses (README, Security).
    limit_redeem_misses_service: str = "400/hour"
    limit_signups_address: str = "20/hour"
    limit_login_failures_account: str = "10/15minutes"
    limit_login_failures_address: str = "100/15minutes"
    limit_password_resets_address: str = "20/hour"  # noqa: S105 - a limit
    limit_password_resets_email: str = "5/hour"  # noqa: S105 - a limit
    # Namespaces the abuse limits' keys, so that deployments sharing one Redis keep apart.
    limit_key_prefix: str = "giftcard"
    request_body_bytes_max: int = 64 * 1024
    database_pool_size: int = 20
    log_level: str = "INFO"
    log_format: str = "json"
    # The demo store pays with a pretend test card: only a demo may serve it (SPEC §7).
    demo_store: bool = False
    # Where links in emails point: the address shoppers reach this service at.
    public_url: str = "http://127.0.0.1:8000"
    # Without an SMTP server, emails are written into this folder as .eml files.
    mail_dir: Path = Path("mail")
    mail_from: str = "giftcard <giftcard@localhost>"
    # A message not accepted after this many attempts is given up as failed.
    mail_attempts_max: int = 8
    # The first retry's wait; each later one doubles it (with jitter), up to an hour.
    mail_retry_base_s: int = 30
    # How long a sender's claim on a message lasts. Longer than the SMTP timeout, so that
    # a live sender never loses a message mid-send; a crashed sender's messages are taken
    # over by another once it ends.
    mail_claim_ttl_s: int = 300
    # The longest one email's delivery may take: connecting, TLS, log-in and sending.
    smtp_timeout_s: int = 30
    # A support adjustment larger than this (in minor units, either sign) waits for a
    # second staff member's approval.
    adjustment_approval_minor: int = 10000

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_postgres(self) -> bool:
        return self.database_url.startswith(("postgresql", "postgres"))


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from the environment, resolving the secret key as the README says."""
    env = os.environ if env is None else env
    database_url = env.get("GIFTCARD_DATABASE_URL", "").strip() or DEFAULT_DATABASE_URL
    if not database_url.startswith(("sqlite", "postgresql", "postgres")):
        raise ConfigError("GIFTCARD_DATABASE_URL must start with sqlite:// or postgresql://")
    log_format = env.get("GIFTCARD_LOG_FORMAT", "json").strip().lower()
    if log_format not in ("json", "text"):
        raise ConfigError("GIFTCARD_LOG_FORMAT must be json or text")
    smtp_url, smtp_timeout_s, mail_claim_ttl_s = _mail_delivery(env)
    return Settings(
        database_url=database_url,
        secret_key=_secret_key(env.get("GIFTCARD_SECRET_KEY", ""), database_url),
        redis_url=env.get("GIFTCARD_REDIS_URL") or None,
        session_ttl_s=parse_duration_s(
            "GIFTCARD_SESSION_TTL", env.get("GIFTCARD_SESSION_TTL", "7d")
        ),
        hold_ttl_s=parse_duration_s("GIFTCARD_HOLD_TTL", env.get("GIFTCARD_HOLD_TTL", "7d")),
        database_wait_s=parse_duration_s(
            "GIFTCARD_DATABASE_WAIT", env.get("GIFTCARD_DATABASE_WAIT", "30s")
        ),
        database_isolation=_isolation(env.get("GIFTCARD_DATABASE_ISOLATION", "")),
        limit_redeem_failures_account=_limit(
            env, "GIFTCARD_LIMIT_REDEEM_FAILURES_ACCOUNT", "10/15minutes"
        ),
        limit_redeem_failures_address=_limit(
            env, "GIFTCARD_LIMIT_REDEEM_FAILURES_ADDRESS", "50/15minutes"
        ),
        limit_redeem_misses_service=_limit(env, "GIFTCARD_LIMIT_REDEEM_MISSES_SERVICE", "400/hour"),
        limit_signups_address=_limit(env, "GIFTCARD_LIMIT_SIGNUPS_ADDRESS", "20/hour"),
        limit_login_failures_account=_limit(
            env, "GIFTCARD_LIMIT_LOGIN_FAILURES_ACCOUNT", "10/15minutes"
        ),
        limit_login_failures_address=_limit(
            env, "GIFTCARD_LIMIT_LOGIN_FAILURES_ADDRESS", "100/15minutes"
        ),
        limit_password_resets_address=_limit(
            env, "GIFTCARD_LIMIT_PASSWORD_RESETS_ADDRESS", "20/hour"
        ),
        limit_password_resets_email=_limit(env, "GIFTCARD_LIMIT_PASSWORD_RESETS_EMAIL", "5/hour"),
        limit_key_prefix=_key_prefix(env.get("GIFTCARD_LIMIT_KEY_PREFIX", "giftcard")),
        request_body_bytes_max=_int(
            env, "GIFTCARD_REQUEST_BODY_MAX_BYTES", 64 * 1024, minimum=1024
        ),
        database_pool_size=_int(env, "GIFTCARD_DATABASE_POOL_SIZE", 20, minimum=1),
        log_level=env.get("GIFTCARD_LOG_LEVEL", "INFO").strip().upper() or "INFO",
        log_format=log_format,
        demo_store=_bool(env, DEMO_STORE_SETTING, False),
        public_url=_public_url(env.get("GIFTCARD_PUBLIC_URL", "")),
        mail_dir=_mail_dir(env.get("GIFTCARD_MAIL_DIR", ""), database_url),
        mail_from=_mail_from(env.get("GIFTCARD_MAIL_FROM", "")),
        mail_attempts_max=_int(env, "GIFTCARD_MAIL_ATTEMPTS_MAX", 8, minimum=1),
        mail_retry_base_s=parse_duration_s(
            "GIFTCARD_MAIL_RETRY_BASE", env.get("GIFTCARD_MAIL_RETRY_BASE", "30s")
        ),
        smtp_url=smtp_url,
        smtp_timeout_s=smtp_timeout_s,
        mail_claim_ttl_s=mail_claim_ttl_s,
        adjustment_approval_minor=_int(env, "GIFTCARD_ADJUSTMENT_APPROVAL_MINOR", 10000),
    )


@dataclass(frozen=True)
class SmtpServer:
    """Where GIFTCARD_SMTP_URL points: `smtp://` (STARTTLS when the server offers it) or
    `smtps://` (TLS from the first byte), with an optional user and password."""

    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """The URL without its user and password, for messages and logs."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


_SMTP_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


def parse_smtp_url(text: str) -> SmtpServer:
    """`smtp://user:password@host:587` → :class:`SmtpServer`; the user and password are
    percent-decoded. A ConfigError names GIFTCARD_SMTP_URL, never the password."""
    example = "such as smtp://mail.example.com:587 or smtps://user:password@mail.example.com"
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise ConfigError(f"GIFTCARD_SMTP_URL must be an address {example}") from None
    if parts.scheme not in _SMTP_DEFAULT_PORTS:
        raise ConfigError(
            f"GIFTCARD_SMTP_URL must start with smtp:// or smtps:// ({example}), "
            f"not {parts.scheme + '://' if parts.scheme else 'nothing'}"
        )
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"GIFTCARD_SMTP_URL must be a server's address {example}")
    if parts.password is not None and not parts.username:
        raise ConfigError("GIFTCARD_SMTP_URL has a password but no user name")
    return SmtpServer(
        host=parts.hostname,
        port=port or _SMTP_DEFAULT_PORTS[parts.scheme],
        implicit_tls=parts.scheme == "smtps",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _mail_delivery(env: Mapping[str, str]) -> tuple[str | None, int, int]:
    """The SMTP server (checked now, so that a typo stops the start rather than every
    email), its timeout, and the claim that must outlast it."""
    smtp_url = env.get("GIFTCARD_SMTP_URL", "").strip() or None
    if smtp_url is not None:
        parse_smtp_url(smtp_url)
    timeout_s = parse_duration_s("GIFTCARD_SMTP_TIMEOUT", env.get("GIFTCARD_SMTP_TIMEOUT", "30s"))
    claim_ttl_s = parse_duration_s(
        "GIFTCARD_MAIL_CLAIM_TTL", env.get("GIFTCARD_MAIL_CLAIM_TTL", "5m")
    )
    if claim_ttl_s <= timeout_s:
        raise ConfigError(
            f"GIFTCARD_MAIL_CLAIM_TTL ({claim_ttl_s}s) must be longer than "
            f"GIFTCARD_SMTP_TIMEOUT ({timeout_s}s): a sender must never lose its claim on "
            "a message while it is still sending it"
        )
    return smtp_url, timeout_s, claim_ttl_s


def _public_url(text: str) -> str:
    url = text.strip().rstrip("/") or "http://127.0.0.1:8000"
    if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", url):
        raise ConfigError(
            "GIFTCARD_PUBLIC_URL must be an http:// or https:// address such as "
            f"https://gifts.example.com, not {text!r}"
        )
    return url


def _mail_dir(text: str, database_url: str) -> Path:
    """Where emails go without an SMTP server: a `mail` folder beside the SQLite
    database unless told otherwise."""
    if text.strip():
        return Path(text.strip())
    database_file = sqlite_path(database_url) if database_url.startswith("sqlite") else None
    return database_file.with_name("mail") if database_file else Path("mail")


def _mail_from(text: str) -> str:
    value = text.strip() or "giftcard <giftcard@localhost>"
    if any(character in value for character in "\r\n") or "@" not in value:
        raise ConfigError(
            f"GIFTCARD_MAIL_FROM must be one address such as 'Shop <gifts@example.com>', "
            f"not {text!r}"
        )
    return value


_ISOLATION_LEVELS = {"read_committed": "READ COMMITTED", "serializable": "SERIALIZABLE"}


def _isolation(text: str) -> str | None:
    """PostgreSQL's isolation level; every transaction is retried on serialization
    failures, so SERIALIZABLE is safe to choose."""
    name = text.strip().lower()
    if not name:
        return None
    if name not in _ISOLATION_LEVELS:
        raise ConfigError("GIFTCARD_DATABASE_ISOLATION must be read_committed or serializable")
    return _ISOLATION_LEVELS[name]


def sqlite_path(database_url: str) -> Path | None:
    """The file behind a SQLite URL, or None for an in-memory database."""
    path = database_url.split("///", 1)[1] if "///" in database_url else ""
    if path in ("", ":memory:"):
        return None
    return Path(path)


def _secret_key(text: str, database_url: str) -> bytes:
    """The key for code hashes. Without one, development on SQLite gets a generated key
    kept in a file beside the database, so hashes stay valid across restarts; PostgreSQL
    is production and must be given one explicitly."""
    if text:
        key = text.encode()
        if len(key) < SECRET_KEY_BYTES_MIN:
            raise ConfigError(
                f"GIFTCARD_SECRET_KEY must be at least {SECRET_KEY_BYTES_MIN} characters long"
            )
        return key
    if not database_url.startswith("sqlite"):
        raise ConfigError(
            "GIFTCARD_SECRET_KEY is required with PostgreSQL: the code hashes depend on it. "
            'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
        )
    database_file = sqlite_path(database_url)
    key_file = (
        database_file.with_name(database_file.name + ".secret")
        if database_file
        else Path("giftcard.secret")
    )
    if key_file.exists():
        return key_file.read_text().strip().encode()
    log.warning(
        "GIFTCARD_SECRET_KEY is not set: generated one into %s. Keep that file with the "
        "database; set GIFTCARD_SECRET_KEY in production.",
        key_file,
    )
    generated = secrets.token_urlsafe(48)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Write a private temporary file, then link it into place: the link fails if another
    # process got there first, so every process ends up with the same, complete key.
    temporary = key_file.with_name(f"{key_file.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generated + "\n")
    try:
        os.link(temporary, key_file)
    except FileExistsError:
        return key_file.read_text().strip().encode()
    finally:
        temporary.unlink()
    return generated.encode()

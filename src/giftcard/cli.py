"""The `giftcard` command: a thin layer over the library. Each command builds what it
needs, calls one use case, and prints the result; errors become a message and a
non-zero exit."""

from __future__ import annotations

import asyncio
import csv
import errno
import functools
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.exc import DBAPIError

from giftcard import access, audit, cards, customers, ids
from giftcard import verify as verify_ledger
from giftcard.clock import SystemClock
from giftcard.codes import format_code
from giftcard.config import DEMO_STORE_SETTING, ConfigError, Settings, load_settings
from giftcard.db import upkeep
from giftcard.db.engine import Database, is_database_unreachable
from giftcard.db.migrate import upgrade
from giftcard.errors import GiftcardError
from giftcard.mail import sender, test_message
from giftcard.mail.outbox import MessageStatus
from giftcard.mail.transport import announcement
from giftcard.money import format_major_plain, parse_major
from giftcard.money import region as find_region
from giftcard.services import Services
from giftcard.unit_of_work import UnitOfWork

T = TypeVar("T")

log = logging.getLogger(__name__)

# Help is click's plain layout, not typer's Rich panels: those give every option a type
# column, so a flag such as --help reads `--help <bool>` as if it took a value. Each option
# that takes a value names it with a metavar (`--port PORT`, `--expires YYYY-MM-DD`).
_PLAIN_HELP: dict[str, Any] = {"rich_markup_mode": None, "no_args_is_help": True}

app = typer.Typer(
    help="giftcard: a self-hostable gift card service.",
    add_completion=False,
    pretty_exceptions_enable=False,
    **_PLAIN_HELP,
)
cards_app = typer.Typer(help="Issue gift cards.", **_PLAIN_HELP)
keys_app = typer.Typer(help="Manage API keys.", **_PLAIN_HELP)
staff_app = typer.Typer(help="Manage support staff.", **_PLAIN_HELP)
mail_app = typer.Typer(help="Check the email settings.", **_PLAIN_HELP)
audit_app = typer.Typer(help="Take the audit log away as CSV.", **_PLAIN_HELP)
app.add_typer(cards_app, name="cards")
app.add_typer(keys_app, name="keys")
app.add_typer(staff_app, name="staff")
app.add_typer(mail_app, name="mail")
app.add_typer(audit_app, name="audit")

err = Console(stderr=True)
CARDS_PER_CLI_BATCH_MAX = 1_000_000
DATABASE_POLL_S = 0.5


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _settings() -> Settings:
    try:
        settings = load_settings()
    except ConfigError as error:
        raise _fail(str(error)) from None
    ids.use_secret(settings.secret_key)
    return settings


def _run(work: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(work)
    except GiftcardError as error:
        raise _fail(_giftcard_trouble(error)) from None


def command_errors(function: Callable[..., T]) -> Callable[..., T]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return function(*args, **kwargs)
        except GiftcardError as error:
            raise _fail(_giftcard_trouble(error)) from None
        except ConfigError as error:
            raise _fail(str(error)) from None
        except DBAPIError as error:
            raise _fail(_database_trouble(error)) from None
        except ConnectionError as error:
            raise _fail(f"could not reach the database: {error}") from None

    return wrapper


def _giftcard_trouble(error: GiftcardError) -> str:
    """A refusal said in a line; a database that could not be reached says so."""
    if is_database_unreachable(error):
        return f"could not reach the database: {error.__cause__}"
    return error.detail


def _database_trouble(error: DBAPIError) -> str:
    """A database the command could not use, said in a line: a missing table most often
    means a database never migrated."""
    cause = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
    return (
        f"the database could not be used ({cause}). If it was never set up, run "
        "`giftcard migrate` first."
    )


async def _with_database(settings: Settings, use: Callable[[Database], Awaitable[T]]) -> T:
    db = Database(settings.database_url)
    try:
        return await use(db)
    finally:
        await db.dispose()


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


@app.command()
@command_errors
def migrate() -> None:
    """Bring the database schema up to date.

    \b
    Example: GIFTCARD_DATABASE_URL=postgresql://app@db/giftcard giftcard migrate
    """
    settings = _settings()
    asyncio.run(upgrade(settings.database_url))
    typer.echo("Database schema is up to date.")


@app.command()
@command_errors
def serve(
    host: Annotated[str, typer.Option(metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(metavar="PORT", help="Port to listen on.", min=1, max=65535)
    ] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", help="Worker processes; default: one per CPU core.", min=1),
    ] = None,
    demo: Annotated[
        bool,
        typer.Option(
            "--demo", help="Serve the demo store; add a demo shopper, staff, API key and codes."
        ),
    ] = False,
) -> None:
    """Run the API and web pages, migrating the database first.

    \b
    Example: giftcard serve --demo --port 8000
    """
    import uvicorn

    from giftcard import logs, serving

    # Before anything is migrated, seeded or printed: a busy port must not cost a set of
    # demo codes nobody can use.
    trouble = address_trouble(host, port)
    if trouble:
        raise _fail(trouble)
    # Links in emails point where this server listens unless told otherwise; each worker
    # process reads its settings from the environment it inherits.
    os.environ.setdefault("GIFTCARD_PUBLIC_URL", listening_url(host, port))
    settings = _settings()
    proxy = proxy_options(os.environ)
    logs.configure(settings.log_level, settings.log_format)
    asyncio.run(_migrate_once_reachable(settings))
    _warn_of_missing_upkeep(settings)
    if demo:
        from giftcard.demo.seed import seed

        for line in asyncio.run(seed(settings)):
            typer.echo(line)
        # Each worker process reads its settings from the environment it inherits.
        os.environ[DEMO_STORE_SETTING] = "true"
        typer.echo(
            f"Open http://{host}:{port}/ in a browser: sign up (or log in as the shopper "
            "above), redeem a code on Your Gift Cards, then pay with the balance in the demo "
            "store or send someone a gift card by email."
        )
    worker_count = workers or os.cpu_count() or 1
    # The workers' metrics meet in a folder of this run's own, removed when it ends (one
    # named in PROMETHEUS_MULTIPROC_DIR is the operator's, and stays).
    metrics_folder = None
    if worker_count > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        remove_metrics_folders_of_ended_servers()
        metrics_folder = tempfile.mkdtemp(prefix=f"{METRICS_FOLDER_PREFIX}{os.getpid()}-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_folder
    typer.echo(f"Serving on http://{host}:{port}/ with {worker_count} worker(s)")
    typer.echo(announcement(settings))
    try:
        uvicorn.run(
            "giftcard.api.app:serving_app",
            factory=True,
            host=host,
            port=port,
            workers=worker_count,
            log_config=None,
            access_log=False,
            # A response's head and body sent together (see giftcard.serving).
            http=serving.HTTP_PROTOCOL,
            **proxy,
        )
    finally:
        if metrics_folder is not None:
            shutil.rmtree(metrics_folder, ignore_errors=True)


# The metrics folder `giftcard serve` makes for its workers: this prefix, then the pid of
# the server that made it.
METRICS_FOLDER_PREFIX = "giftcard-metrics-"


def remove_metrics_folders_of_ended_servers() -> None:
    """Remove the metrics folders that servers which have ended left in the temporary
    directory: one killed, or stopped by a signal sent to its whole process group (Ctrl-C
    on `make run`), ends without removing its own."""
    for folder in Path(tempfile.gettempdir()).glob(f"{METRICS_FOLDER_PREFIX}*-*"):
        pid = folder.name[len(METRICS_FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and folder.is_dir() and not _process_exists(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _warn_of_missing_upkeep(settings: Settings) -> None:
    """Log what the database server leaves undone that this service needs (see
    giftcard.db.upkeep); a check that fails is logged too, and serving goes on."""
    try:
        said = asyncio.run(upkeep.check(settings.database_url))
    except Exception as error:
        log.warning("could not read the database server's settings: %s", error)
        return
    for warning in said:
        log.warning(warning)


async def _migrate_once_reachable(settings: Settings) -> None:
    """Migrate, waiting up to GIFTCARD_DATABASE_WAIT for a database that does not answer
    yet (one starting or restarting beside this server); any other trouble at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.database_wait_s
    waiting = False
    while True:
        try:
            await upgrade(settings.database_url)
            return
        except Exception as error:
            if not is_database_unreachable(error) or loop.time() >= deadline:
                raise
            if not waiting:
                typer.echo(
                    f"waiting up to {settings.database_wait_s} s for the database, which "
                    f"does not answer yet: {str(error).splitlines()[0]}",
                    err=True,
                )
                waiting = True
            await asyncio.sleep(DATABASE_POLL_S)


def address_trouble(host: str, port: int) -> str | None:
    """Why `giftcard serve` could not listen on `host` and `port`, in a sentence, or None
    when it can. The address is bound and released at once, the way uvicorn then binds
    it: IPv6 when the host has a colon, else IPv4, with SO_REUSEADDR (so a port whose last
    connections are closing is not taken for busy)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        resolved = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        return f"cannot listen on --host {host!r}: it is not an address of this machine ({error})."
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(resolved[0][4])
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is in use already: stop what listens there, "
                    f"or pick another port: --port {_another(port)} "
                    f"(make run PORT={_another(port)})."
                )
            return f"cannot listen on {host} port {port}: {error.strerror or error}."
    return None


def _another(port: int) -> int:
    return port + 1 if port < 65535 else port - 1


def listening_url(host: str, port: int) -> str:
    """The address of a server listening on `host` and `port`, as a browser on this
    machine reaches it: a wildcard address is reached at the loopback one."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{port}"


def proxy_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """uvicorn's proxy settings from GIFTCARD_FORWARDED_ALLOW_IPS.

    Unset, no proxy is trusted: `X-Forwarded-For` and `X-Forwarded-Proto` are ignored,
    so a client cannot pick the address the per-address limits count. Set, they are
    believed from those addresses or networks only, or from anyone with `*` (for a
    server that only a proxy can reach)."""
    text = environ.get("GIFTCARD_FORWARDED_ALLOW_IPS", "").strip()
    if not text:
        return {"proxy_headers": False}
    entries = [entry.strip() for entry in text.split(",")]
    if entries == ["*"]:
        return {"proxy_headers": True, "forwarded_allow_ips": "*"}
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ConfigError(
                "GIFTCARD_FORWARDED_ALLOW_IPS must be * alone or comma-separated IP "
                f"addresses or networks (10.0.0.5, 10.0.0.0/8), not {entry!r}"
            ) from None
    return {"proxy_headers": True, "forwarded_allow_ips": ",".join(entries)}


def _expiry(text: str | None, today: date) -> datetime | None:
    """A card marked to expire on a date is good through the whole of that day in UTC:
    it expires at the midnight (UTC) that ends it. A day before `today` (UTC) is refused
    here, before any card or file is made."""
    if text is None:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise _fail(f"--expires must be a date like 2027-12-31, not {text!r}") from None
    if day < today:
        raise _fail(
            f"--expires {day.isoformat()} is in the past: give the last day the cards are "
            f"good, today ({today.isoformat()}, UTC) or later."
        )
    return datetime.combine(day + timedelta(days=1), time(0, 0), tzinfo=UTC)


def last_valid_day(expires_at: datetime) -> date:
    """The day a card expiring at `expires_at` is good through, in UTC: what a printed
    card says ("valid through 2027-12-31"). A card expiring at midnight is good through
    the day before; one expiring mid-day (set through the API) through that day."""
    return (expires_at.astimezone(UTC) - timedelta(microseconds=1)).date()


@cards_app.command("issue")
@command_errors
def cards_issue(
    count: Annotated[
        int,
        typer.Option(metavar="N", help="How many cards.", min=1, max=CARDS_PER_CLI_BATCH_MAX),
    ],
    amount: Annotated[
        str, typer.Option(metavar="AMOUNT", help="Face value in major units, e.g. 25.00.")
    ],
    region: Annotated[
        str, typer.Option(metavar="REGION", help="Store region: US GB DE FR JP CA AU IN.")
    ],
    out: Annotated[
        Path, typer.Option(metavar="FILE", help="CSV file to write; must not exist yet.")
    ],
    physical: Annotated[
        bool, typer.Option("--physical", help="Printed cards, inactive until sold.")
    ] = False,
    expires: Annotated[
        str | None,
        typer.Option(
            metavar="YYYY-MM-DD",
            help="Last valid day: the card is good through the whole of it, in UTC.",
        ),
    ] = None,
) -> None:
    """Issue cards and write their codes to a CSV file, the only place they will exist.

    \b
    Example: giftcard cards issue --count 500 --amount 25.00 --region US --out cards.csv
    """
    if out.exists():
        raise _fail(f"{out} exists already; refusing to overwrite a file of codes.")
    if not out.parent.exists():
        raise _fail(f"the folder {out.parent} does not exist.")
    store = find_region(region)
    request = cards.IssueRequest(
        amount=parse_major(amount, store.currency, param="amount"),
        region=store,
        kind=cards.CardKind.PHYSICAL if physical else cards.CardKind.DIGITAL,
        count=count,
        expires_at=_expiry(expires, today=SystemClock().now().astimezone(UTC).date()),
    )
    # Read after the input is checked: a refused command leaves no trace, not even the
    # secret key file a first run writes.
    settings = _settings()
    issued = asyncio.run(_issue_to_csv(settings, request, out))
    typer.echo(f"Issued {len(issued)} card(s); codes written to {out}")


async def _issue_to_csv(
    settings: Settings, request: cards.IssueRequest, out: Path
) -> Sequence[cards.IssuedCard]:
    partial = out.with_name(out.name + ".partial")
    try:
        # Claimed empty before any card exists: another run writing to the same file
        # stops here instead of mixing its codes in.
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise _fail(f"{partial} exists: another issue is writing it, or one was cut off.") from None
    db = Database(settings.database_url)
    try:
        with Progress(
            TextColumn("Issuing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err,
        ) as progress:
            task = progress.add_task("issue", total=request.count)

            def write_csv(issued: Sequence[cards.IssuedCard]) -> None:
                # Written before the cards commit: a card whose code was never written down
                # must not exist. A retried transaction writes the file afresh.
                _write_csv(partial, issued)

            def advance(done: int) -> None:
                progress.advance(task, done)

            issued = await cards.issue(
                UnitOfWork(db, SystemClock()),
                request,
                secret_key=settings.secret_key,
                actor=audit.OPERATOR.actor,
                count_max=CARDS_PER_CLI_BATCH_MAX,
                on_progress=advance,
                keep_codes=write_csv,
                audit_actor=audit.OPERATOR,
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        await db.dispose()
    try:
        os.link(partial, out)
    except FileExistsError:
        raise _fail(f"{out} appeared while issuing; the codes are in {partial}") from None
    partial.unlink()
    return issued


def _write_csv(path: Path, issued: Sequence[cards.IssuedCard]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as handle:
        writer = csv.writer(handle)
        # SPEC §8 names the last column expires_at; it holds the last day the card is good
        # (what a printed card says), not the moment after it.
        writer.writerow(["serial", "code", "amount", "currency", "region", "kind", "expires_at"])
        for item in issued:
            card = item.card
            writer.writerow(
                [
                    card.serial,
                    format_code(item.code),
                    format_major_plain(card.amount, card.currency),
                    card.currency,
                    card.region,
                    card.kind.value,
                    last_valid_day(card.expires_at).isoformat() if card.expires_at else "",
                ]
            )
        handle.flush()
        os.fsync(handle.fileno())


@keys_app.command("create")
@command_errors
def keys_create(
    role: Annotated[
        customers.Role, typer.Option(metavar="ROLE", help="admin, merchant or support.")
    ],
    name: Annotated[str | None, typer.Option(metavar="NAME", help="What the key is for.")] = None,
) -> None:
    """Create an API key and print it (last line); it is never shown again.

    \b
    Example: giftcard keys create --role merchant --name "web shop"
    """
    settings = _settings()

    key_id, key = asyncio.run(
        _with_database(
            settings,
            lambda db: customers.create_api_key(
                db, role=role, name=name, clock=SystemClock(), audit_actor=audit.OPERATOR
            ),
        )
    )
    typer.echo(
        f"Created API key {key_id} with role {role.value}. Keep it secret; it is shown once:"
    )
    typer.echo(key)


@keys_app.command("list")
@command_errors
def keys_list() -> None:
    """List API keys: id, role, the key's first characters, name, and when revoked.

    \b
    Example: giftcard keys list
    """
    settings = _settings()
    keys = asyncio.run(_with_database(settings, access.list_api_keys))
    if not keys:
        typer.echo("No API keys. Create one with: giftcard keys create --role merchant")
        return
    for key in keys:
        state = f"revoked {_when(key.revoked_at)}" if key.revoked_at else "active"
        typer.echo(
            f"{key.id:>5}  {key.role.value:<8}  {key.prefix}…  {state:<24}  "
            f"created {_when(key.created_at)}  {key.name or ''}".rstrip()
        )


@keys_app.command("revoke")
@command_errors
def keys_revoke(
    key_id: Annotated[
        int, typer.Argument(metavar="ID", help="The key's id, as `giftcard keys list` shows.")
    ],
) -> None:
    """Revoke an API key: its next request is refused.

    \b
    Example: giftcard keys revoke 3
    """
    settings = _settings()
    clock = SystemClock()
    key = asyncio.run(
        _with_database(
            settings,
            lambda db: access.revoke_api_key(db, key_id, clock=clock, audit_actor=audit.OPERATOR),
        )
    )
    typer.echo(f"Revoked API key {key.id} ({key.role.value}, {key.prefix}…).")


@staff_app.command("create")
@command_errors
def staff_create(
    email: Annotated[
        str, typer.Option(metavar="EMAIL", help="The staff member's email, used to log in.")
    ],
    role: Annotated[customers.Role, typer.Option(metavar="ROLE", help="support or admin.")],
    name: Annotated[str | None, typer.Option(metavar="NAME", help="Display name.")] = None,
) -> None:
    """Create a staff member; the password is the first line of standard input.

    \b
    Example: echo "$PASSWORD" | giftcard staff create --email ana@store.example --role support
    """
    settings = _settings()
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise _fail("give the password as the first line of standard input.")

    staff_id = asyncio.run(
        _with_database(
            settings,
            lambda db: customers.create_staff(
                db,
                email=email,
                password=password,
                role=role,
                name=name,
                clock=SystemClock(),
                audit_actor=audit.OPERATOR,
            ),
        )
    )
    typer.echo(f"Created staff member {staff_id} ({email}, {role.value}).")


@staff_app.command("list")
@command_errors
def staff_list() -> None:
    """List staff members: id, role, email, and whether disabled.

    \b
    Example: giftcard staff list
    """
    settings = _settings()
    members = asyncio.run(_with_database(settings, access.list_staff))
    if not members:
        typer.echo(
            "No staff members. Create one with: giftcard staff create --email E --role support"
        )
        return
    for member in members:
        state = f"disabled {_when(member.disabled_at)}" if member.disabled_at else "active"
        typer.echo(
            f"{member.id:>5}  {member.role.value:<8}  {member.email}  {state}  "
            f"{member.name or ''}".rstrip()
        )


@staff_app.command("disable")
@command_errors
def staff_disable(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="The staff member's email.")],
) -> None:
    """Disable a staff member: they can no longer log in, and every session they have ends.

    \b
    Example: giftcard staff disable --email ana@store.example
    """
    settings = _settings()
    clock = SystemClock()
    member, ended = asyncio.run(
        _with_database(
            settings,
            lambda db: access.disable_staff(db, email, clock=clock, audit_actor=audit.OPERATOR),
        )
    )
    typer.echo(f"Disabled {member.email} ({member.role.value}); {ended} session(s) ended.")


@staff_app.command("password")
@command_errors
def staff_password(
    email: Annotated[str, typer.Option(metavar="EMAIL", help="The staff member's email.")],
) -> None:
    """Set a staff member's password from the first line of standard input; every
    session they have ends. Staff get no "Forgot your password?" emails: this is how
    an operator resets a staff password.

    \b
    Example: echo "$PASSWORD" | giftcard staff password --email ana@store.example
    """
    settings = _settings()
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise _fail("give the password as the first line of standard input.")

    ended = asyncio.run(
        _with_database(
            settings,
            lambda db: customers.set_staff_password(
                db, email=email, password=password, clock=SystemClock(), audit_actor=audit.OPERATOR
            ),
        )
    )
    typer.echo(f"Set the password of {email.strip().lower()}; {ended} session(s) ended.")


@app.command(short_help="Check every ledger invariant, naming each culprit.")
@command_errors
def verify() -> None:
    """Check every ledger invariant; exit 0 with a summary, or 1 naming each culprit.

    \b
    Example: giftcard verify
    """
    settings = _settings()

    report = asyncio.run(_with_database(settings, verify_ledger.verify))
    for line in report.summary():
        typer.echo(line)
    if report.problems:
        for problem in report.problems:
            # One culprit a line, never wrapped to the terminal width: scripts grep it.
            err.print(f"[red]FAIL[/red] {problem}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    typer.echo("OK: every invariant holds.")


@app.command(short_help="Send the queued emails, beside or instead of `giftcard serve`.")
@command_errors
def worker() -> None:
    """Send the queued emails, in a process of its own beside `giftcard serve` (which
    sends them too; any number of senders may run). SIGTERM or Ctrl-C stops it once the
    email in hand is sent and recorded.

    \b
    Example: GIFTCARD_SMTP_URL=smtps://user:password@mail.example.com giftcard worker
    """
    from giftcard import logs

    settings = _settings()
    logs.configure(settings.log_level, settings.log_format)
    typer.echo(f"Sending emails from {_database_name(settings)}. {announcement(settings)}")
    asyncio.run(_send_until_stopped(settings))


def _database_name(settings: Settings) -> str:
    """The database's address without its password."""
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)


async def _send_until_stopped(settings: Settings) -> None:
    services = Services.build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    try:
        await sender.run(services, stop=stop)
    finally:
        await services.close()


# How often `giftcard mail test` looks whether its email went out.
MAIL_TEST_POLL_INTERVAL_S = 0.5


@mail_app.command("test")
@command_errors
def mail_test(
    to: Annotated[
        str, typer.Option(metavar="EMAIL", help="The address to send the test email to.")
    ],
    wait: Annotated[
        int,
        typer.Option(
            metavar="SECONDS",
            help="Seconds to wait for a running server or worker to send it; 0: only queue it.",
            min=0,
            max=600,
        ),
    ] = 30,
) -> None:
    """Queue a test email and say how its first attempt went: a check of the email
    settings. A running `giftcard serve` or `giftcard worker` sends it.

    \b
    Example: giftcard mail test --to ops@example.com
    """
    settings = _settings()
    queued, state = asyncio.run(_queue_test_email(settings, to, wait_s=wait))
    typer.echo(
        f"Queued a test email to {queued.recipient} with Message-ID {queued.message_id}. "
        f"{announcement(settings)}."
    )
    if state is None:
        return
    if state.status is MessageStatus.SENT:
        typer.echo("Sent.")
    elif state.status is MessageStatus.FAILED:
        raise _fail(f"it was given up: {state.last_error}")
    elif state.last_error:
        raise _fail(
            f"attempt {state.attempts} failed: {state.last_error}. It will be tried again "
            f"from {state.next_attempt_at.isoformat(timespec='seconds')}."
        )
    else:
        raise _fail(
            f"not sent within {wait}s: is `giftcard serve` or `giftcard worker` running "
            "on this database?"
        )


async def _queue_test_email(
    settings: Settings, to: str, *, wait_s: int
) -> tuple[test_message.QueuedMessage, test_message.MessageState | None]:
    """Queue the email, then watch it until its first attempt ends or `wait_s` passed."""
    db = Database(settings.database_url)
    try:
        queued = await test_message.queue_test_email(UnitOfWork(db, SystemClock()), to)
        if wait_s == 0:
            return queued, None
        deadline = asyncio.get_running_loop().time() + wait_s
        while True:
            async with db.transaction(write=False) as connection:
                state = await test_message.message_state(connection, queued.id)
            attempted = state.status is not MessageStatus.PENDING or state.last_error
            if attempted or asyncio.get_running_loop().time() >= deadline:
                return queued, state
            await asyncio.sleep(MAIL_TEST_POLL_INTERVAL_S)
    finally:
        await db.dispose()


@audit_app.command("export")
@command_errors
def audit_export(
    out: Annotated[
        Path, typer.Option(metavar="FILE", help="CSV file to write; must not exist yet.")
    ],
    since: Annotated[
        str | None, typer.Option(metavar="WHEN", help="From this date (UTC) or ISO 8601 moment on.")
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN", help="Up to the end of this date (UTC), or before this moment."
        ),
    ] = None,
) -> None:
    """Write the audit log's entries, oldest first with both hashes, to a CSV file; the
    export is itself recorded in the log.

    \b
    Example: giftcard audit export --since 2026-12-01 --out audit.csv
    """
    filters = audit.parse_filters(since=since, until=until)
    if out.exists():
        raise _fail(f"{out} exists already; refusing to overwrite it.")
    if not out.parent.exists():
        raise _fail(f"the folder {out.parent} does not exist.")
    settings = _settings()
    export = asyncio.run(_with_database(settings, lambda db: _export_audit(db, filters, out)))
    typer.echo(
        f"Wrote {export.rows} audit entries to {out}; the export is recorded as "
        f"audit entry {export.entry_id}."
    )


async def _export_audit(db: Database, filters: audit.Filters, out: Path) -> audit.Export:
    # Claimed before the export is recorded: a file in the way stops it before then.
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise _fail(f"{out} exists already; refusing to overwrite it.") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            export = await audit.start_export(
                UnitOfWork(db, SystemClock()), audit.OPERATOR, filters
            )
            async for chunk in audit.export_csv(db, export):
                handle.write(chunk)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        os.unlink(out)
        raise
    return export


def main() -> None:
    app()

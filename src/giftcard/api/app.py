"""The FastAPI application: routers, problem handlers, middleware, lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from giftcard import __version__, passwords, web
from giftcard.api import (
    docs,
    problems,
    routes_audit,
    routes_cards,
    routes_customers,
    routes_gifts,
    routes_payments,
    routes_reports,
    routes_service,
    routes_support,
    routes_support_customers,
)
from giftcard.api.lanes import Lanes
from giftcard.api.middleware import AccessLog, BodySizeLimit, NoStore
from giftcard.config import Settings, load_settings
from giftcard.mail import sender
from giftcard.services import Services

# Beyond the SMTP timeout, how long a stopping server waits for its sender to record the
# email in hand.
SENDER_STOP_MARGIN_S = 5

DESCRIPTION = """
A self-hostable gift card service. Money is always an integer in the currency's minor
unit beside its ISO 4217 `currency`. Errors are RFC 9457 `application/problem+json`
documents with a stable `code`. Send `Authorization: Bearer <token or API key>`.
"""


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Build the app. Tests pass their own `services` (a clock they control, a database)."""
    settings = settings or (services.settings if services else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services is None
        running: Services = services or Services.build(settings)
        app.state.services = running
        await passwords.prepare()
        thresholds = gc.get_threshold()
        if owned:
            _set_aside_from_collection()
        maintenance = asyncio.create_task(running.maintain())
        tidying = asyncio.create_task(running.tidy())
        # Each worker process sends email too; claims keep any two from sending one twice.
        stop_sending = asyncio.Event()
        sending = asyncio.create_task(sender.run(running, stop=stop_sending))
        try:
            yield
        finally:
            for task in (maintenance, tidying):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await _stop_sender(sending, stop_sending, running.settings)
            if owned:
                await running.close()
                gc.unfreeze()
                gc.set_threshold(*thresholds)

    app = FastAPI(
        title="giftcard",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by `docs` from installed assets instead of FastAPI's CDN-loading pages.
        docs_url=None,
        redoc_url=None,
    )
    if services is not None:
        app.state.services = services
    problems.install(app)
    docs.install(app)
    # Tried in this order, each router's routes one by one (see routes_customers): the
    # busiest first, redemptions, then checkout.
    for routes in (
        routes_customers,
        routes_payments,
        routes_cards,
        routes_gifts,
        routes_support,
        routes_support_customers,
        routes_audit,
        routes_reports,
        routes_service,
    ):
        app.include_router(routes.router)
    web.install(app, demo_store=settings.demo_store)
    # Innermost, so that the middleware below wraps what a lane answers too.
    app.add_middleware(Lanes, lanes=[*routes_customers.LANES, *routes_payments.LANES])
    app.add_middleware(BodySizeLimit, limit_bytes=settings.request_body_bytes_max)
    # Outside the size limit, so that its 413 is marked too.
    app.add_middleware(NoStore, prefix="/v1")
    app.add_middleware(AccessLog)
    return app


# Objects allocated (net of those freed) before the garbage collector walks its youngest
# generation. At Python's default, 700, a serving worker under load collected it about a
# hundred times a second, each time walking the objects of every request in flight, for
# about 5 % of its CPU; yet almost all a request allocates is freed by reference counting
# when it ends, so those collections found little. At this threshold a worker collected
# once in 12 s of redemptions over HTTP instead of about 1,300 times; a collection walks
# at most this many objects (a few milliseconds).
YOUNG_COLLECTION_THRESHOLD = 20_000


def _set_aside_from_collection() -> None:
    """Set what the worker has built so far (modules, the app, its routes and models, the
    services) aside from the garbage collector's full collections: it lives as long as
    the process, and walking it again and again is what those collections spent their
    time on. Measured over HTTP on PostgreSQL: full collections under load took up to
    116 ms, every request in flight waiting, and made a redemption's p99 112-120 ms;
    set aside, they take 3-6 ms and the p99 is 44-48 ms.

    Also collect the youngest generation less often (:data:`YOUNG_COLLECTION_THRESHOLD`)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


async def _stop_sender(
    sending: asyncio.Task[None], stop: asyncio.Event, settings: Settings
) -> None:
    """Let the sender finish and record the email in hand (bounded by the SMTP timeout),
    so that a restart sends nothing twice; cancel it if it takes longer."""
    stop.set()
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(sending, timeout=settings.smtp_timeout_s + SENDER_STOP_MARGIN_S)


def serving_app() -> FastAPI:
    """The factory `giftcard serve` hands to uvicorn: each worker process reads the
    settings, sets up its own logging, and builds the app."""
    from giftcard import logs

    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    return create_app(settings)

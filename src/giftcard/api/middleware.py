"""ASGI middleware: a request body size limit, no caching of API answers, and one log
line plus metrics a request, under a request id that the answer names in `Request-Id`
and the audit log records."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from giftcard.api.problems import problem_response
from giftcard.errors import ErrorCode
from giftcard.metrics import REQUESTS

log = logging.getLogger("giftcard.access")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """Refuse bodies over `limit_bytes` with 413, by Content-Length or by counting."""

    def __init__(self, app: ASGIApp, limit_bytes: int) -> None:
        self.app = app
        self.limit_bytes = limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit_bytes:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            # FastAPI turns any error while reading a body into its own 400, so the
            # exception above may never reach us: once the body was too large, whatever
            # the app answers is dropped and replaced by the 413 below.
            if exceeded:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, tracking_send)
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The request body is larger than {self.limit_bytes} bytes.",
        )
        await response(scope, receive, send)


class NoStore:
    """`Cache-Control: no-store` on every answer under `prefix`, errors included.

    API answers carry balances, histories and codes that no browser or proxy cache may
    keep. Marking every answer under the prefix, rather than choosing route by route,
    leaves no new route or error path to forget."""

    def __init__(self, app: ASGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            await self.app(scope, receive, send)
            return

        async def marking_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, marking_send)


REQUEST_ID_HEADER = "Request-Id"


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


class AccessLog:
    """Method, path (never the query string), status and duration of each request, with
    the request's id (made here, never taken from the client: the audit log trusts it)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            duration_s = time.perf_counter() - started
            route: Any = scope.get("route")
            template = getattr(route, "path", "unmatched")
            REQUESTS.labels(template, scope["method"], str(status)).observe(duration_s)
            client = scope.get("client")
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "route": template,
                    "status": status,
                    "duration_ms": round(duration_s * 1000, 2),
                    "client": client[0] if client else None,
                    "actor": (scope.get("state") or {}).get("actor"),
                    "request_id": request_id,
                },
            )

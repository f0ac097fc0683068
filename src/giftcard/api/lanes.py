"""Lanes: the busiest POSTs answered without FastAPI's per-request machinery.

For each request FastAPI matches its routes, parses the content type with the `email`
package, solves the route's dependencies level by level (headers, the door, the
services, the body) and runs an exit stack around them: for `POST /v1/me/redemptions`,
measured in one process through the whole app on PostgreSQL (blocks of 500 redemptions
alternating between two apps, 16 in flight), 629-750 us of CPU a redemption against
465-546 us when a lane answers it, about a quarter of what a worker spends on one.

A lane serves one route's plain case and nothing else: a body sent as `application/json`
that its model validates, and an `Idempotency-Key`, when there is one, of a length the
route accepts. It calls the route's own door and the same function the route's endpoint
calls, so who may do what and what is answered are the route's. Anything else (another
content type, a body that is not JSON or that the model refuses, a key of the wrong
length) goes on to FastAPI, with the body it has read, and is answered there, by the
route: what a client is told about a bad request has one source. The route stays
declared with FastAPI for the OpenAPI document and for those answers.

The lanes sit inside the other middleware (request id, access log, `no-store`, the body
size limit), so what they do for a request they do for these too. A lane turns a
:class:`GiftcardError` into its problem as the app's handler does; any other exception
goes up to the app's last-resort handler, as from a route.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from giftcard import idempotency
from giftcard.api.deps import Door
from giftcard.api.problems import error_response, media_type_of
from giftcard.errors import GiftcardError

Body = TypeVar("Body", bound=BaseModel)
Who = TypeVar("Who")


@dataclass(frozen=True)
class Lane(Generic[Body, Who]):
    """`route`'s plain case: `body` validated, the caller admitted by `door`, answered by
    `answer` (the function the route's endpoint calls with the same three values)."""

    route: APIRoute
    body: type[Body]
    door: Door[Who]
    answer: Callable[[Request, Body, Who], Awaitable[Response]]

    def __post_init__(self) -> None:
        if self.route.methods != {"POST"}:
            raise ValueError(f"a lane serves a POST route, not {self.route.methods}")

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        request = Request(scope, receive)
        if media_type_of(request.headers.get("content-type")) != "application/json" or not (
            _key_fits(request.headers.get("idempotency-key"))
        ):
            await app(scope, receive, send)
            return
        try:
            raw = await request.body()
        except ClientDisconnect:
            return  # Gone before its body came: no one to answer.
        try:
            # As FastAPI reads it: the JSON document, then the model validating it.
            body = self.body.model_validate(json.loads(raw))
        except (ValueError, RecursionError):  # Not JSON (or nested too deep for the
            # parser), not UTF-8, or refused by the model.
            await app(scope, _replaying(raw, receive), send)
            return
        # Where the route would have put itself: the access log names it.
        scope["route"] = self.route
        try:
            response = await self.answer(request, body, await self.door(request))
        except GiftcardError as error:
            response = error_response(error)
        await response(scope, receive, send)


def route_of(routes: Sequence[Any], endpoint: Callable[..., Any]) -> APIRoute:
    """The route of `routes` whose endpoint is `endpoint`."""
    for route in routes:
        if isinstance(route, APIRoute) and route.endpoint is endpoint:
            return route
    raise LookupError(f"no route has the endpoint {endpoint.__name__}")


class Lanes:
    """ASGI middleware: a POST to a lane's path goes to the lane, everything else on."""

    def __init__(self, app: ASGIApp, lanes: Sequence[Lane[Any, Any]]) -> None:
        self.app = app
        self._by_path = {lane.route.path: lane for lane in lanes}
        if len(self._by_path) != len(lanes):
            raise ValueError("two lanes for one path")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            # Under a root path, the path has it in front and matches no lane: FastAPI
            # answers, as it answers everything the lanes do not.
            lane = self._by_path.get(scope["path"])
            if lane is not None:
                await lane.serve(scope, receive, send, self.app)
                return
        await self.app(scope, receive, send)


def _key_fits(key: str | None) -> bool:
    """A key FastAPI's own check of the route's header would let through (what else
    `run_idempotent` checks, it checks on either path)."""
    return key is None or idempotency.KEY_LENGTH_MIN <= len(key) <= idempotency.KEY_LENGTH_MAX


def _replaying(body: bytes, receive: Receive) -> Receive:
    """`receive` for the app after a lane has read the body: the body again, then
    whatever comes next (a disconnect)."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""Every route and every dependency of every route runs on the event loop.

FastAPI sends a plain function (a `def` dependency or route, or a class used as a
dependency) to its thread pool and back on every request: a hop between threads that
cost a redemption about a twentieth of its CPU time. Coroutines run where they are."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from giftcard.api.app import create_app
from giftcard.config import Settings
from tests.conftest import TEST_SECRET_KEY


def _calls(dependant: Dependant) -> Iterator[object]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _runs_on_the_loop(call: object) -> bool:
    if inspect.isclass(call):
        return False
    if inspect.iscoroutinefunction(call):
        return True
    return inspect.iscoroutinefunction(type(call).__call__)


def test_no_route_or_dependency_is_sent_to_the_thread_pool() -> None:
    app = create_app(
        Settings(database_url="sqlite:///:memory:", secret_key=TEST_SECRET_KEY, demo_store=True)
    )
    routes = [
        context.route
        for context in iter_route_contexts(app.routes)
        if isinstance(context.route, APIRoute)
    ]
    assert len(routes) > 50
    offenders = sorted(
        {
            f"{route.path}: {getattr(call, '__qualname__', call)!r}"
            for route in routes
            for call in (route.endpoint, *_calls(route.dependant))
            if not _runs_on_the_loop(call)
        }
    )
    assert offenders == []

"""What every door that speaks HTTP (the JSON API and the web pages) reads from a request:
the running services and the address the request came from."""

from __future__ import annotations

from starlette.requests import Request

from giftcard.services import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


def client_address(request: Request) -> str:
    """The caller's address, as the server saw it (behind a trusted proxy, the address the
    proxy reported)."""
    return request.client.host if request.client else "unknown"

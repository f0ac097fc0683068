"""What every door that speaks HTTP (the JSON API and the web pages) reads from a request:
the running services and the address the request came from."""

from __future__ import annotations

import functools
import ipaddress

from starlette.requests import Request

from giftcard.services import Services


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


async def services_dependency(request: Request) -> Services:
    """:func:`services` as a route's dependency: a coroutine, which FastAPI runs on the event
    loop, where a plain function would be sent to its thread pool and back on every request."""
    return services(request)


# An IPv6 subscriber is usually given a whole /64 (RFC 6177): counted address by address,
# one client could rotate through 2**64 of them and never meet a limit.
IPV6_SUBSCRIBER_PREFIX = 64


def client_address(request: Request) -> str:
    """The caller's address as the abuse limits count it: the address the server saw
    (behind a trusted proxy, the one the proxy reported); for IPv6, its /64 network."""
    return _counted(request.client.host if request.client else "unknown")


# Parsing an address costs more than the rest of a door's work on it, and a server hears
# the same few addresses (its clients, its proxies) again and again.
@functools.lru_cache(maxsize=4096)
def _counted(host: str) -> str:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_SUBSCRIBER_PREFIX), strict=False)
        return str(network)
    return str(address)

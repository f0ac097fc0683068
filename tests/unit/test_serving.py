"""`giftcard serve`'s HTTP protocol (giftcard.serving): a response's head and body leave
in one write, nothing is lost or reordered, and a closing connection sends what it
holds before it closes."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from giftcard.serving import HTTP_PROTOCOL, CoalescingHttpToolsProtocol


class Recording(asyncio.Transport):
    """A connection that records what is written to it, and when it is closed."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, bytes]] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.events.append(("write", bytes(data)))

    def close(self) -> None:
        self.closed = True
        self.events.append(("close", b""))

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 4711), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def hello(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")],
        }
    )
    await send({"type": "http.response.body", "body": b"hello"})


async def streamed(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for part in (b"one ", b"two ", b"three"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
        await asyncio.sleep(0)  # Each part in a turn of its own.
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def serve(app: Any, request: bytes) -> Recording:
    """`request` on a new connection of the protocol serving `app`, until answered."""
    state = ServerState()
    config = Config(app=app, log_config=None, lifespan="off", proxy_headers=False)
    protocol = CoalescingHttpToolsProtocol(config, state, {}, _loop=asyncio.get_running_loop())
    transport = Recording()
    protocol.connection_made(transport)
    protocol.data_received(request)
    await asyncio.gather(*state.tasks)
    for _ in range(3):
        await asyncio.sleep(0)
    answered = Recording()
    answered.events = list(transport.events)
    protocol.connection_lost(None)
    return answered


GET = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"


async def test_a_response_leaves_in_one_write() -> None:
    transport = await serve(hello, GET)
    assert [kind for kind, _ in transport.events] == ["write"]
    (_, sent) = transport.events[0]
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sent.endswith(b"\r\n\r\nhello")
    assert b"content-length: 5\r\n" in sent


async def test_a_closing_connection_sends_first_then_closes() -> None:
    transport = await serve(hello, GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert [kind for kind, _ in transport.events] == ["write", "close"]
    assert transport.events[0][1].endswith(b"hello")


async def test_a_streamed_body_arrives_whole_and_in_order() -> None:
    transport = await serve(streamed, GET)
    sent = b"".join(data for kind, data in transport.events if kind == "write")
    head, _, body = sent.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


def test_serve_names_the_protocol() -> None:
    module, _, name = HTTP_PROTOCOL.partition(":")
    assert module == "giftcard.serving"
    assert name == CoalescingHttpToolsProtocol.__name__

"""How `giftcard serve` speaks HTTP: uvicorn's httptools protocol, with what one turn of
the event loop writes to a connection sent in one piece.

uvicorn writes a response's head when the app starts it and its body when the app sends
it: two writes, so two `send` system calls, two TCP segments and, on the other side, two
wake-ups, for every answer of a few hundred bytes. Here the writes a connection gets
while the event loop runs its callbacks wait for the end of that run and go out as one
(`loop.call_soon`): a response's head and body, which the app sends one right after the
other, leave together. Nothing waits for a timer, nothing is reordered, and closing a
connection sends what it still holds first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _Coalescing:
    """A transport whose writes are joined until the loop's next turn; everything else
    is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(data)

    def _flush(self) -> None:
        if not self._held:
            return
        data = b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`_Coalescing` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _Coalescing(transport, self.loop)  # type: ignore[assignment]


# What `giftcard serve` hands uvicorn as its HTTP protocol.
HTTP_PROTOCOL = f"{__name__}:{CoalescingHttpToolsProtocol.__name__}"

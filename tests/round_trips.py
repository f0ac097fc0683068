"""A loopback proxy in front of PostgreSQL that counts round trips.

A round trip is a turn of the conversation: the client sends, then waits for what the
server answers before it sends again. The proxy counts, on every connection through it,
each time the client sends after the server has spoken (or for the first time): one
count per turn however the client batches its messages, and independent of the driver
(asyncpg's extended protocol, a simple query, a pipelined batch count alike).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy import make_url

CHUNK_BYTES = 65536


@dataclass
class RoundTripCounter:
    """Round trips through the proxy since it started or was last reset."""

    turns: int = 0

    def reset(self) -> None:
        self.turns = 0


class _Turn:
    """Whose turn it is on one connection."""

    def __init__(self) -> None:
        self.client_spoke_last = False


async def _pipe(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    from_client: bool,
    turn: _Turn,
    counter: RoundTripCounter,
) -> None:
    try:
        while chunk := await reader.read(CHUNK_BYTES):
            if from_client:
                if not turn.client_spoke_last:
                    counter.turns += 1
                turn.client_spoke_last = True
            else:
                turn.client_spoke_last = False
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def counting_proxy(
    database_url: str, *, port: int = 0
) -> AsyncIterator[tuple[str, RoundTripCounter]]:
    """Yields the URL of `database_url` reached through a counting proxy (listening on
    `port` when given, else on a free one), and its counter."""
    target = make_url(database_url)
    target_host, target_port = target.host or "127.0.0.1", target.port or 5432
    counter = RoundTripCounter()

    async def connected(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        server_reader, server_writer = await asyncio.open_connection(target_host, target_port)
        turn = _Turn()
        await asyncio.gather(
            _pipe(client_reader, server_writer, from_client=True, turn=turn, counter=counter),
            _pipe(server_reader, client_writer, from_client=False, turn=turn, counter=counter),
        )

    server = await asyncio.start_server(connected, "127.0.0.1", port)
    proxy_port = server.sockets[0].getsockname()[1]
    try:
        yield (
            target.set(host="127.0.0.1", port=proxy_port).render_as_string(hide_password=False),
            counter,
        )
    finally:
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)

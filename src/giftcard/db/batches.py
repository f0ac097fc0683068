"""Group commit for statements many requests make alike.

While one call to the database runs for a kind of request (an abuse-limit reservation,
the lookup of who holds a bearer secret), the requests of this process that come for the
same thing wait together; when it returns, they all go in the next call, in the order
they came. Each request gets its own answer, as if it had called alone: the statement a
batch sends is written to answer for each of its items. One round trip, one pooled
connection and, for a write, one commit serve the whole batch.

Before a call goes, its sender lets the event loop turn a few times (`TURNS`), so that
the requests this process has already received and that are on their way to the same
call (their bytes read, their earlier steps answered) join it rather than wait for the
next. Nothing waits for a timer: a turn with nothing else to do takes microseconds, so a
request that comes while nothing runs goes at once. Under load the calls carry more
requests each, and the fixed cost of a call (its round trip, its commit, the work of
sending it) is shared by more of them.

A call that fails fails only the requests it carried; the ones waiting behind it go in
the next call. A call may also answer one of its items with :class:`Failed`: that
request alone gets the error. A request that goes away while it waits (its task
cancelled) leaves the others to their answers, and is not sent at all if its call has
not started.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from giftcard.db.engine import Database

Item = TypeVar("Item")
Answer = TypeVar("Answer")

# Items in one call at most: more would make the first of them wait for the statement
# to do the last ones' work.
BATCH_MAX = 64
# Turns of the event loop a sender lets pass before each call. Measured over HTTP on
# PostgreSQL (2 workers, 32 connections, runs of 12 s interleaved): redemptions
# 1,101 -> 1,277/s on average over 5 rounds (1,252 -> 1,368/s over 4 other rounds), the
# median p99 49 -> 38 ms. A timer of 2 ms instead made the calls larger still but left the
# cores idle while it ran, for no gain in rate.
TURNS = 10


@dataclass(frozen=True)
class Failed:
    """The answer of an item that failed by itself in a call that went on."""

    error: Exception


class Batches(Generic[Item, Answer]):
    """Calls of `send`, each with the items that waited while the one before it ran;
    `send` returns one answer per item, in their order (or :class:`Failed`)."""

    def __init__(
        self,
        send: Callable[[Sequence[Item]], Awaitable[Sequence[Answer | Failed]]],
        *,
        batch_max: int = BATCH_MAX,
        turns: int = TURNS,
    ) -> None:
        self._send_batch = send
        self._batch_max = batch_max
        self._turns = turns
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        """`item`'s answer, from the next call that carries it."""
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        return await answer

    async def _send(self) -> None:
        batch: list[tuple[Item, asyncio.Future[Answer]]] = []
        try:
            while self._waiting:
                for _ in range(self._turns):
                    await asyncio.sleep(0)
                batch = self._waiting[: self._batch_max]
                del self._waiting[: self._batch_max]
                # Whoever is gone (cancelled while waiting) is left out: it is not sent.
                batch = [(item, answer) for item, answer in batch if not answer.cancelled()]
                if not batch:
                    continue
                try:
                    answers = await self._send_batch([item for item, _ in batch])
                    if len(answers) != len(batch):
                        raise RuntimeError(f"{len(answers)} answers for {len(batch)} items")
                except Exception as error:
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for (_, answer), result in zip(batch, answers, strict=True):
                    if answer.done():
                        continue
                    if isinstance(result, Failed):
                        answer.set_exception(result.error)
                    else:
                        answer.set_result(result)
        finally:
            # Stopped (the process is shutting down): no request is left waiting.
            self._sender = None
            for _, answer in (*batch, *self._waiting):
                answer.cancel()
            self._waiting.clear()


class PerDatabase(Generic[Item, Answer]):
    """One :class:`Batches` for each database, made on first use with `send` bound to it:
    for use cases that are given the database with each call. On SQLite, whose
    statements run in this process with no round trip to save, each item is sent alone."""

    def __init__(
        self, send: Callable[[Database, Sequence[Item]], Awaitable[Sequence[Answer | Failed]]]
    ) -> None:
        self._send = send

    async def submit(self, db: Database, item: Item) -> Answer:
        if db.is_sqlite:
            (answer,) = await self._send(db, [item])
            if isinstance(answer, Failed):
                raise answer.error
            return answer
        batches: Batches[Item, Answer] | None = db.batches.get(self)
        if batches is None:
            batches = Batches(functools.partial(self._send, db))
            db.batches[self] = batches
        return await batches.submit(item)

"""giftcard.db.batches: the requests that wait while a call runs go together in the next
call, each gets its own answer, and one call's failure stays with its own requests."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from giftcard.db import batches as batches_module
from giftcard.db.batches import Batches, Failed


class Recorder:
    """A `send` that answers each item with its double, after the test lets it.

    The tests that step the event loop by hand to say which item comes while a call runs
    make their batches with `turns=0`; the turns a sender lets pass have their own tests."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_call: int | None = None

    async def send(self, items: Sequence[int]) -> list[int]:
        self.calls.append(list(items))
        await self.release.wait()
        if self.fail_call == len(self.calls):
            raise RuntimeError(f"call {len(self.calls)} failed")
        return [item * 2 for item in items]


async def test_items_that_wait_while_a_call_runs_go_together_in_the_next_in_order() -> None:
    recorder = Recorder()
    batches = Batches(recorder.send, turns=0)
    first = asyncio.ensure_future(batches.submit(1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(batches.submit(item)) for item in (2, 3, 4)]
    await asyncio.sleep(0)
    recorder.release.set()

    assert await first == 2
    assert await asyncio.gather(*waiting) == [4, 6, 8]
    assert recorder.calls == [[1], [2, 3, 4]]


async def test_an_item_that_comes_while_nothing_runs_goes_at_once() -> None:
    recorder = Recorder()
    recorder.release.set()
    batches = Batches(recorder.send, turns=0)

    assert await batches.submit(5) == 10
    assert await batches.submit(6) == 12
    assert recorder.calls == [[5], [6]]


async def test_no_call_carries_more_than_its_maximum() -> None:
    recorder = Recorder()
    batches = Batches(recorder.send, batch_max=3, turns=0)
    submitted = [asyncio.ensure_future(batches.submit(item)) for item in range(8)]
    await asyncio.sleep(0)
    recorder.release.set()

    assert await asyncio.gather(*submitted) == [item * 2 for item in range(8)]
    assert recorder.calls == [[0, 1, 2], [3, 4, 5], [6, 7]]


async def test_a_failed_call_fails_only_the_items_it_carried() -> None:
    recorder = Recorder()
    recorder.fail_call = 2
    batches = Batches(recorder.send, turns=0)
    first = asyncio.ensure_future(batches.submit(1))
    await asyncio.sleep(0)
    second_call = [asyncio.ensure_future(batches.submit(item)) for item in (2, 3)]
    await asyncio.sleep(0)
    recorder.release.set()
    assert await first == 2
    await asyncio.sleep(0)
    third_call = asyncio.ensure_future(batches.submit(4))

    for failed in second_call:
        with pytest.raises(RuntimeError, match="call 2 failed"):
            await failed
    assert await third_call == 8
    assert recorder.calls == [[1], [2, 3], [4]]


async def test_a_send_that_answers_the_wrong_number_of_items_fails_them() -> None:
    async def short(items: Sequence[int]) -> list[int]:
        return list(items)[1:]

    batches = Batches(short)
    with pytest.raises(RuntimeError, match="0 answers for 1 items"):
        await batches.submit(1)


async def test_an_item_given_up_while_it_waits_leaves_the_others_their_answers() -> None:
    recorder = Recorder()
    batches = Batches(recorder.send, turns=0)
    submitted = [asyncio.ensure_future(batches.submit(item)) for item in (1, 2, 3)]
    await asyncio.sleep(0)
    submitted[1].cancel()
    recorder.release.set()

    done = await asyncio.gather(*submitted, return_exceptions=True)

    assert done[0] == 2
    assert done[2] == 6
    assert isinstance(done[1], asyncio.CancelledError)


async def test_a_stopped_sender_leaves_no_item_waiting() -> None:
    """When the process stops the sender (its task cancelled) mid-call, the items it
    carried and those waiting are cancelled rather than left waiting for ever."""
    recorder = Recorder()
    batches = Batches(recorder.send, turns=0)
    first = asyncio.ensure_future(batches.submit(1))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(batches.submit(2))
    await asyncio.sleep(0)
    sender = batches._sender
    assert sender is not None
    sender.cancel()

    for item in (first, waiting):
        with pytest.raises(asyncio.CancelledError):
            await item
    recorder.release.set()
    assert await batches.submit(3) == 6


async def test_an_item_answered_with_failed_alone_gets_its_error() -> None:
    async def odd_ones_fail(items: Sequence[int]) -> list[int | Failed]:
        return [Failed(ValueError(f"{item} is odd")) if item % 2 else item for item in items]

    batches = Batches(odd_ones_fail)
    done = await asyncio.gather(
        *(batches.submit(item) for item in range(4)), return_exceptions=True
    )

    assert done[0] == 0
    assert done[2] == 2
    assert [str(done[1]), str(done[3])] == ["1 is odd", "3 is odd"]


async def test_an_item_given_up_before_its_call_starts_is_not_sent() -> None:
    recorder = Recorder()
    batches = Batches(recorder.send, turns=0)
    first = asyncio.ensure_future(batches.submit(1))
    await asyncio.sleep(0)
    waiting = [asyncio.ensure_future(batches.submit(item)) for item in (2, 3)]
    await asyncio.sleep(0)
    waiting[0].cancel()
    recorder.release.set()

    assert await first == 2
    assert await waiting[1] == 6
    assert recorder.calls == [[1], [3]]


async def _after_turns(turns: int, batches: Batches[int, int], item: int) -> int:
    """Submit `item` once the loop has turned `turns` times: a request that was already
    received but had steps of its own to take before it asked."""
    for _ in range(turns):
        await asyncio.sleep(0)
    return await batches.submit(item)


@pytest.mark.parametrize(
    ("turns", "first_call"),
    # With no turns, what the turns change: the first item goes alone.
    [(3, [1, 2, 3]), (0, [1])],
)
async def test_items_on_their_way_when_a_call_is_about_to_go_join_it(
    turns: int, first_call: list[int]
) -> None:
    recorder = Recorder()
    recorder.release.set()
    batches = Batches(recorder.send, turns=turns)

    done = await asyncio.gather(
        batches.submit(1), _after_turns(1, batches, 2), _after_turns(2, batches, 3)
    )

    assert done == [2, 4, 6]
    assert recorder.calls[0] == first_call


async def test_a_sender_never_waits_on_a_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its turns are turns of the loop (sleeps of zero), so an item alone goes at once."""
    slept: list[float] = []
    sleep = asyncio.sleep

    async def recorded(delay: float) -> None:
        slept.append(delay)
        await sleep(delay)

    monkeypatch.setattr(batches_module.asyncio, "sleep", recorded)
    recorder = Recorder()
    recorder.release.set()
    batches = Batches(recorder.send)

    assert await batches.submit(7) == 14
    assert recorder.calls == [[7]]
    assert slept == [0] * batches_module.TURNS

"""core.batching: one call at a time, nothing waits when idle, order kept, failures reach their callers."""

from __future__ import annotations

import asyncio

import pytest

from core.batching import Batcher


async def test_an_idle_batcher_calls_at_once_and_a_busy_one_gathers_in_order() -> None:
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        calls.append(items)
        if len(calls) == 1:
            await gate.wait()  # the first call is under way while the others arrive
        return [i * 10 for i in items]

    batcher: Batcher[int, int] = Batcher(run)
    first = asyncio.ensure_future(batcher(0))
    await asyncio.sleep(0)
    assert calls == [[0]], "alone and idle: called at once"
    rest = [asyncio.ensure_future(batcher(i)) for i in range(1, 6)]
    await asyncio.sleep(0)
    gate.set()
    assert await asyncio.gather(first, *rest) == [0, 10, 20, 30, 40, 50]
    assert calls == [[0], [1, 2, 3, 4, 5]], "what came meanwhile went as one call, in order"


async def test_a_failed_call_fails_its_callers_and_the_next_goes_on() -> None:
    async def run(items: list[int]) -> list[int]:
        if 1 in items:
            raise RuntimeError("the database said no")
        return items

    batcher: Batcher[int, int] = Batcher(run)
    with pytest.raises(RuntimeError):
        await batcher(1)
    assert await batcher(2) == 2

"""Items of one key applied a batch at a time, each submitter told its own outcome."""

from __future__ import annotations

import asyncio

import pytest

from shared.coalescer import Coalescer


class Refused(Exception):
    pass


class Held(Exception):
    pass


async def test_items_queued_behind_a_batch_are_applied_together_in_order() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def apply(key: str, items: list[int]) -> list[BaseException | None]:
        batches.append(items)
        await gate.wait()
        return [Refused(str(i)) if i == 3 else None for i in items]

    coalescer = Coalescer[int, None](apply, lambda exc: Held(str(exc)))
    first = asyncio.create_task(coalescer.submit("k", 1))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(coalescer.submit("k", i)) for i in (2, 3, 4)]
    other = asyncio.create_task(coalescer.submit("other", 9))
    await asyncio.sleep(0)
    gate.set()
    await first
    results = await asyncio.gather(*rest, other, return_exceptions=True)
    assert batches == [[1], [9], [2, 3, 4]] or batches == [[1], [2, 3, 4], [9]]
    assert results[0] is None and isinstance(results[1], Refused) and results[2] is None


async def test_when_a_batch_fails_its_runner_gets_the_error_and_the_others_are_held() -> None:
    gate = asyncio.Event()
    calls = 0

    async def apply(key: str, items: list[int]) -> list[BaseException | None]:
        nonlocal calls
        calls += 1
        await gate.wait()
        if calls == 2:
            raise RuntimeError("store says no")
        return [None] * len(items)

    coalescer = Coalescer[int, None](apply, lambda exc: Held(repr(exc)))
    first = asyncio.create_task(coalescer.submit("k", 1))
    await asyncio.sleep(0)
    second, third = (asyncio.create_task(coalescer.submit("k", i)) for i in (2, 3))
    await asyncio.sleep(0)
    gate.set()
    await first
    with pytest.raises(RuntimeError):
        await second
    with pytest.raises(Held):
        await third

"""Applying work items of one key one batch at a time, each batch holding every item that
queued up while the previous one ran.

Items that arrive together for one key (the hosts of a batch finishing at nearly the
same moment) become one change instead of as many conflicting ones. Each `submit`
returns only once the batch holding its item has been applied, and fails if its item
failed: a caller that acks a message after `submit` acks only what is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar
from weakref import WeakValueDictionary

T = TypeVar("T")
# One outcome per item: None when applied, or the exception its submitter gets.
Apply = Callable[[str, list[T]], Awaitable[Sequence[BaseException | None]]]


class Coalescer(Generic[T]):
    def __init__(
        self, apply: Apply[T], others_failed: Callable[[BaseException], BaseException]
    ) -> None:
        """`others_failed(exc)`: what the other items of a batch get when applying it
        raised `exc` (the item whose submitter ran the batch gets `exc` itself)."""
        self._apply = apply
        self._others_failed = others_failed
        self._queued: dict[str, list[tuple[T, asyncio.Future[None]]]] = {}
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    async def submit(self, key: str, item: T) -> None:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append((item, mine))
        async with self._locks.setdefault(key, asyncio.Lock()):
            if not mine.done():
                await self._run(key, mine)
        await mine

    async def _run(self, key: str, mine: asyncio.Future[None]) -> None:
        queued = self._queued.pop(key, [])
        try:
            outcomes = await self._apply(key, [item for item, _ in queued])
        except BaseException as exc:
            for _, theirs in queued:
                if theirs is not mine:
                    theirs.set_exception(self._others_failed(exc))
            raise
        for (_, future), outcome in zip(queued, outcomes, strict=True):
            if outcome is None:
                future.set_result(None)
            else:
                future.set_exception(outcome)

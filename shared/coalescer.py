"""Applying work items of one key one batch at a time, each batch holding every item that
queued up while the previous one ran.

Items that arrive together for one key (the hosts of a batch finishing at nearly the
same moment) become one change instead of as many conflicting ones; lookups that arrive
together (the first polls of a fleet) become one question instead of as many. Each
`submit` returns its item's outcome only once the batch holding it has been applied, and
fails if its item failed: a caller that acks a message after `submit` acks only what is
stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar
from weakref import WeakValueDictionary

T = TypeVar("T")
R = TypeVar("R")
# One outcome per item: what its submitter gets, or the exception it raises.
Apply = Callable[[str, list[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    def __init__(
        self, apply: Apply[T, R], others_failed: Callable[[BaseException], BaseException]
    ) -> None:
        """`others_failed(exc)`: what the other items of a batch get when applying it
        raised `exc` (the item whose submitter ran the batch gets `exc` itself)."""
        self._apply = apply
        self._others_failed = others_failed
        self._queued: dict[str, list[tuple[T, asyncio.Future[R]]]] = {}
        self._locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

    async def submit(self, key: str, item: T) -> R:
        mine: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queued.setdefault(key, []).append((item, mine))
        async with self._locks.setdefault(key, asyncio.Lock()):
            if not mine.done():
                await self._run(key, mine)
        return await mine

    async def _run(self, key: str, mine: asyncio.Future[R]) -> None:
        queued = self._queued.pop(key, [])
        try:
            outcomes = await self._apply(key, [item for item, _ in queued])
        except BaseException as exc:
            for _, theirs in queued:
                if theirs is not mine:
                    theirs.set_exception(self._others_failed(exc))
            raise
        for (_, future), outcome in zip(queued, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

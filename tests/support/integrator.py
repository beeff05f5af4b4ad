"""An integrator's view of Rehost over AMQP: bind a queue to `rehost.events`, publish commands."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.topology import EVENTS


@dataclass
class Received:
    message: AbstractIncomingMessage
    body: dict[str, Any]


@dataclass
class EventTap:
    """Everything published on `rehost.events` under `pattern` since the tap opened."""

    keep: bool = True  # False: only count arrivals (the bench, whose tap must cost little)
    received: list[Received] = field(default_factory=list)
    arrivals: int = 0
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def _on(self, message: AbstractIncomingMessage) -> None:
        if self.keep:
            self.received.append(Received(message, json.loads(message.body)))
        self.arrivals += 1
        self._arrived.set()

    def of(self, aggregate_id: str) -> list[dict[str, Any]]:
        return [r.body for r in self.received if r.body.get("aggregate_id") == aggregate_id]

    async def wait_for(
        self, count: int, aggregate_id: str | None = None, timeout: float = 10
    ) -> list[dict[str, Any]]:
        async with asyncio.timeout(timeout):
            # Counted without copying when nothing is filtered: the bench waits here for
            # 50,000 events, and a copy per arrival cost it most of a core.
            while (len(self.of(aggregate_id)) if aggregate_id else self.arrivals) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.of(aggregate_id) if aggregate_id else [r.body for r in self.received]

    async def settle(self, quiet: float = 1.5) -> None:
        """Waits until no event has arrived for `quiet` seconds (to prove nothing more comes)."""
        while True:
            before = self.arrivals
            await asyncio.sleep(quiet)
            if self.arrivals == before:
                return


@asynccontextmanager
async def event_tap(
    amqp_url: str, pattern: str = "#", keep: bool = True
) -> AsyncIterator[EventTap]:
    connection = await aio_pika.connect_robust(amqp_url)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, routing_key=pattern)
        tap = EventTap(keep=keep)
        await queue.consume(tap._on, no_ack=True)
        yield tap
    finally:
        await connection.close()

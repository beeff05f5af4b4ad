"""This gateway process's own subscription to `rehost.events`, for its read models.

Each process declares a quorum queue of its own, `rehost.gateway.<id>`, bound to the
event keys its read models follow. It outlives a broker restart and a dropped
connection: on reconnecting, the process finds its queue again with the events that
waited meanwhile, so nothing is missed. The queue expires after `expires` seconds
without a consumer (a process that died leaves nothing behind for long); a process that
reconnects after that finds it gone, or whose queue the broker deleted under it, declares a
new one and then tells its read models to start afresh (`on_reset`): in that order, so
that whatever a read model learns after the reset is from events the new queue holds or
from answers read after it was bound.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, cast

import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import ChannelNotFoundEntity
from aiormq import spec

from shared import jsoncodec
from shared.bus import Bus
from shared.envelope import new_id
from shared.topology import EVENTS

log = structlog.get_logger(__name__)
EventHandler = Callable[[dict[str, Any]], None]


class EventFeed:
    def __init__(self, bus: Bus, expires: float = 600.0, prefetch: int = 256) -> None:
        self.bus = bus
        self.queue_name = f"rehost.gateway.{new_id()[:16]}"
        self.expires_ms = int(expires * 1000)
        self.prefetch = prefetch
        self._handlers: dict[str, list[EventHandler]] = {}
        self._resets: list[Callable[[], None]] = []
        self._channel: AbstractRobustChannel | None = None
        self._tag: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.consuming = False

    def on(self, event_type: str, handler: EventHandler) -> None:
        """Calls `handler` with the body of every event of this type (synchronously: a read
        model's update is a few dictionary operations)."""
        self._handlers.setdefault(event_type, []).append(handler)

    def on_reset(self, callback: Callable[[], None]) -> None:
        self._resets.append(callback)

    async def start(self) -> None:
        connection = self.bus.connection
        assert connection is not None
        self._channel = cast(AbstractRobustChannel, await self.bus.new_channel(self.prefetch))
        await self._subscribe()
        connection.reconnect_callbacks.add(self._resume)

    async def _subscribe(self) -> None:
        """Declares the queue, binds it and consumes. Not left to the robust channel to
        restore: a queue it re-declared silently could be a new, empty one."""
        assert self._channel is not None
        queue: AbstractRobustQueue = await self._channel.declare_queue(
            self.queue_name,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-expires": self.expires_ms},
            robust=False,
        )
        for event_type in self._handlers:
            await queue.bind(EVENTS, routing_key=event_type, robust=False)
        self._tag = await queue.consume(self._on_message, robust=False)
        underlay = await self._channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
        self.consuming = True

    def _reset(self) -> None:
        for reset in self._resets:
            reset()

    async def _resume(self, connection: AbstractRobustConnection | None) -> None:
        self.consuming = False
        lost = connection is None or not await self._queue_exists(connection)
        await self._subscribe()
        if lost:
            log.warning("feed.queue_lost", queue=self.queue_name)
            self._reset()
        log.info("feed.resumed", queue=self.queue_name)

    def _on_cancel(self, frame: spec.Basic.Cancel) -> None:
        """The broker cancelled the consumer: its queue was deleted, and what it held with it."""
        if frame.consumer_tag != self._tag:
            return
        self.consuming = False
        log.warning("feed.cancelled", queue=self.queue_name)
        # Not awaited here: the channel's reader runs this callback and must go on reading
        # for the declarations that follow to be answered.
        task = asyncio.create_task(self._resubscribe())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _resubscribe(self) -> None:
        await self._subscribe()
        self._reset()

    async def _queue_exists(self, connection: AbstractRobustConnection) -> bool:
        probe = await connection.channel(publisher_confirms=False)
        try:
            await probe.declare_queue(self.queue_name, passive=True, robust=False)
            return True
        except ChannelNotFoundEntity:
            return False
        finally:
            with contextlib.suppress(Exception):
                await probe.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            event = jsoncodec.loads(message.body)
            for handler in self._handlers.get(str(event.get("type")), ()):
                handler(event)
        except Exception:
            # A read model that could not take an event may now be wrong about something:
            # it starts afresh, answering from the owners until it knows again.
            log.exception("feed.event_failed", routing_key=message.routing_key)
            self._reset()
        await message.ack()

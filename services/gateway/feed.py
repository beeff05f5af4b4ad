"""This gateway process's own subscription to `rehost.events`, for its read models.

Each process declares a quorum queue of its own, `rehost.gateway.<id>`, bound to the
event keys its read models follow. It outlives a broker restart and a dropped
connection: on reconnecting, the process finds its queue again with the events that
waited meanwhile, so nothing is missed. The queue expires after `expires` seconds
without a consumer (a process that died leaves nothing behind for long); a process that
reconnects after that finds it gone, or whose queue the broker deleted under it, declares a
new one and then tells its read models to start afresh (`on_reset`): in that order, so
that whatever a read model learns after the reset is from events the new queue holds or
from answers read after it was bound. A channel closed under the feed while the connection
stays up (a channel error) is consumed on again once the robust channel reopens: the queue
and what it holds are still there. A feed that stopped consuming would leave every poll
this process answers from its read model stale for good.

Beside the read models' event types, patterns are bound only while someone watches them
(`watch`, the operator console's live streams): every gateway process would otherwise
decode every event of the system for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
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
Tap = Callable[[dict[str, Any], dict[str, Any]], None]  # every event, and its AMQP headers


class EventFeed:
    def __init__(self, bus: Bus, expires: float = 600.0, prefetch: int = 256) -> None:
        self.bus = bus
        self.queue_name = f"rehost.gateway.{new_id()[:16]}"
        self.expires_ms = int(expires * 1000)
        self.prefetch = prefetch
        self._handlers: dict[str, list[EventHandler]] = {}
        self._resets: list[Callable[[], None]] = []
        self._taps: list[Tap] = []
        self._watched: dict[str, int] = {}  # pattern -> watchers
        self._channel: AbstractRobustChannel | None = None
        self._consuming_on: object | None = None  # the channel (aiormq's) it consumes on
        self._subscribing = asyncio.Lock()
        self._tag: str | None = None
        self._queue: AbstractRobustQueue | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.consuming = False

    def on(self, event_type: str, handler: EventHandler) -> None:
        """Calls `handler` with the body of every event of this type (synchronously: a read
        model's update is a few dictionary operations)."""
        self._handlers.setdefault(event_type, []).append(handler)

    def on_reset(self, callback: Callable[[], None]) -> None:
        self._resets.append(callback)

    def tap(self, callback: Tap) -> None:
        """Calls `callback` with every event the queue receives, whatever its type."""
        self._taps.append(callback)

    async def watch(self, patterns: tuple[str, ...]) -> None:
        """Binds the queue to `patterns` too, for as long as someone watches them. Every
        pattern is counted before the first wait, so `unwatch` undoes a cancelled watch."""
        first = []
        for pattern in patterns:
            self._watched[pattern] = self._watched.get(pattern, 0) + 1
            if self._watched[pattern] == 1:
                first.append(pattern)
        if first and self._queue is not None:
            # Shielded from a watcher that goes meanwhile (a console that disconnects):
            # aiormq closes a channel whose call is cancelled half-way, and the read
            # models' consumer is on this channel.
            await asyncio.shield(self._bind(self._queue, first))

    async def _bind(self, queue: AbstractRobustQueue, patterns: list[str]) -> None:
        for pattern in patterns:
            await queue.bind(EVENTS, routing_key=pattern, robust=False)

    def unwatch(self, patterns: tuple[str, ...]) -> None:
        """Nobody watches `patterns` any more (once each `watch` is undone): unbound in the
        background, since a watcher often leaves by being cancelled."""
        unwatched = []
        for pattern in patterns:
            self._watched[pattern] -= 1
            if self._watched[pattern] == 0:
                del self._watched[pattern]
                if pattern not in self._handlers:
                    unwatched.append(pattern)
        if unwatched and self._queue is not None:
            self._in_background(self._unbind(self._queue, unwatched))

    async def _unbind(self, queue: AbstractRobustQueue, patterns: list[str]) -> None:
        for pattern in patterns:
            if pattern not in self._watched:  # not watched again meanwhile
                with contextlib.suppress(Exception):  # gone with the connection: unbound
                    await queue.unbind(EVENTS, routing_key=pattern)

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        """A resubscription that failed (the broker went away meanwhile) is said so; the
        connection's reconnect subscribes again."""
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("feed.background_failed", error=repr(task.exception()))

    async def start(self) -> None:
        connection = self.bus.connection
        assert connection is not None
        self._channel = cast(AbstractRobustChannel, await self.bus.new_channel(self.prefetch))
        await self._subscribe()
        self._channel.reopen_callbacks.add(self._reopened)
        connection.reconnect_callbacks.add(self._resume)

    @property
    def channel(self) -> AbstractRobustChannel:
        assert self._channel is not None, "not started"
        return self._channel

    async def _subscribe(self) -> None:
        """Declares the queue, binds it and consumes, unless it already consumes on the
        channel as it is now (a reconnect reopens the channel too, and both say so). Not
        left to the robust channel to restore: a queue it re-declared silently could be a
        new, empty one."""
        async with self._subscribing:
            underlay = await self.channel.get_underlay_channel()
            if underlay is self._consuming_on:
                self.consuming = True
                return
            queue: AbstractRobustQueue = await self.channel.declare_queue(
                self.queue_name,
                durable=True,
                arguments={"x-queue-type": "quorum", "x-expires": self.expires_ms},
                robust=False,
            )
            for key in {*self._handlers, *self._watched}:
                await queue.bind(EVENTS, routing_key=key, robust=False)
            self._queue = queue
            self._tag = await queue.consume(self._on_message, robust=False)
            underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
            self._consuming_on = underlay
            self.consuming = True

    def _reset(self) -> None:
        for reset in self._resets:
            reset()

    def _reopened(self, _channel: object) -> None:
        """The channel was closed and opened again; its consumer was not restored with it.
        Not awaited here: the robust channel calls this while it is being restored."""
        self.consuming = False
        self._in_background(self._resume(self.bus.connection))

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
        self._consuming_on = None  # the channel is open, but nothing consumes on it now
        log.warning("feed.cancelled", queue=self.queue_name)
        # Not awaited here: the channel's reader runs this callback and must go on reading
        # for the declarations that follow to be answered.
        self._in_background(self._resubscribe())

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
        else:
            for tap in self._taps:
                try:
                    tap(event, dict(message.headers or {}))
                except Exception:  # a watcher's trouble is its own, not the read models'
                    log.exception("feed.tap_failed", routing_key=message.routing_key)
        await message.ack()

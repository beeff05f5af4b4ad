"""Live events for the operator console and `rehost watch`: what this gateway process's
event queue receives, handed to each stream of the event's tenant as Server-Sent Events.

No second source of truth: a stream carries the events Rehost publishes anyway, and the
page reads the state itself from the documented API (it reloads what an event says
changed, and everything when told to resync). Memory stays bounded per stream: each has
a queue of `MAX_WAITING` events, and a stream that falls that far behind (a browser that
stopped reading) is dropped with a last event saying so, never buffered forever. When the
process's event queue was lost or the broker connection came back, every stream is told
to resync, since events may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from shared import jsoncodec

from .feed import EventFeed

# What the console follows: every event a tenant's resources emit (not the agents' own,
# which carry no tenant of theirs and come every few seconds from every host).
PATTERNS = ("source.*", "command.*", "task.*", "script.#", "zstack.#")
MAX_WAITING = 256
KEEPALIVE = 15.0  # seconds: a comment line, so that proxies keep an idle stream open
MAX_DATA = 16_384  # bytes of an event's `data` passed on; a register's full server is cut


def trace_id(headers: dict[str, Any]) -> str:
    """The trace of an event's message (its W3C `traceparent` header), or ""."""
    value = headers.get("traceparent")
    text = value.decode() if isinstance(value, bytes) else str(value or "")
    parts = text.split("-")
    return parts[1] if len(parts) == 4 else ""


def frame(kind: str, body: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + jsoncodec.dump_bytes(body) + b"\n\n"


def shown(event: dict[str, Any], headers: dict[str, Any]) -> dict[str, Any]:
    """What a stream passes on of an event: its envelope, its data unless too large, and
    the trace id of the change that caused it."""
    data = event.get("data") or {}
    if len(jsoncodec.dump_bytes(data)) > MAX_DATA:
        data = {"cut": True}
    return {
        "event_id": event.get("event_id"),
        "type": event.get("type"),
        "aggregate_id": event.get("aggregate_id"),
        "aggregate_version": event.get("aggregate_version"),
        "occurred_at": event.get("occurred_at"),
        "trace_id": trace_id(headers),
        "data": data,
    }


@dataclass(eq=False)
class Stream:
    domain_id: str
    kinds: tuple[str, ...]  # the prefixes of the event types its reader may see
    waiting: asyncio.Queue[bytes] = field(default_factory=lambda: asyncio.Queue(MAX_WAITING))
    dropped: bool = False

    def offer(self, message: bytes) -> None:
        if self.dropped:
            return
        try:
            self.waiting.put_nowait(message)
        except asyncio.QueueFull:
            self.dropped = True  # the next read ends the stream


class LiveEvents:
    def __init__(self, feed: EventFeed) -> None:
        self.feed = feed
        self._streams: set[Stream] = set()
        feed.tap(self._on_event)
        feed.on_reset(self.resync)
        connection = feed.bus.connection
        if connection is not None:  # events in flight on the lost connection may be late
            connection.reconnect_callbacks.add(self._reconnected)

    def __len__(self) -> int:
        return len(self._streams)

    def _on_event(self, event: dict[str, Any], headers: dict[str, Any]) -> None:
        domain_id = event.get("domain_id")
        if not self._streams or not domain_id:
            return
        kind = str(event.get("type", ""))
        message = frame("rehost", shown(event, headers))
        for stream in self._streams:
            if stream.domain_id == domain_id and kind.startswith(stream.kinds):
                stream.offer(message)

    def _reconnected(self, _connection: object) -> None:
        self.resync()

    def resync(self) -> None:
        for stream in self._streams:
            stream.offer(frame("resync", {}))

    async def stream(self, domain_id: str, kinds: tuple[str, ...]) -> AsyncIterator[bytes]:
        """The tenant's events of these kinds (type prefixes) as Server-Sent Events, until the
        reader goes or falls behind."""
        mine = Stream(domain_id, kinds)
        self._streams.add(mine)
        try:
            await self.feed.watch(PATTERNS)
            yield frame("ready", {})
            while not mine.dropped:
                try:
                    async with asyncio.timeout(KEEPALIVE):
                        yield await mine.waiting.get()
                except TimeoutError:
                    yield b": keep-alive\n\n"
            yield frame("dropped", {"reason": f"more than {MAX_WAITING} events behind"})
        finally:
            self._streams.discard(mine)
            self.feed.unwatch(PATTERNS)

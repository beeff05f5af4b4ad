"""The outbox relay: publishes events stored with their state change, then removes them.

Woken right after each commit and also sweeping on an interval, so an event left
behind by a crash between commit and publish is published on the next sweep (at
least once; integrators dedupe by `event_id`).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog
from opentelemetry import context as otel_context

from shared.bus import Bus, Unavailable
from shared.envelope import Event, event_message
from shared.store import Store, StoreUnavailable
from shared.telemetry import extract_context
from shared.topology import EVENTS

log = structlog.get_logger(__name__)


class OutboxRelay:
    def __init__(self, bus: Bus, store: Store, collections: list[str], interval: float) -> None:
        self.bus = bus
        self.store = store
        self.collections = collections
        self.interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except (Unavailable, StoreUnavailable) as exc:
                log.warning("outbox.flush_failed", error=str(exc))
            except Exception:
                log.exception("outbox.flush_crashed")

    async def flush(self) -> int:
        """Publishes every pending event once; returns how many were published."""
        published = 0
        for collection in self.collections:
            while docs := await self.store.with_outbox(collection, limit=100):
                for doc in docs:
                    published += await self._publish(collection, doc.id, list(doc.outbox))
                if len(docs) < 100:
                    break
        return published

    async def _publish(self, collection: str, doc_id: str, entries: list[dict[str, object]]) -> int:
        done: list[str] = []
        for entry in entries:
            event = Event.model_validate(entry)
            trace = entry.get("trace")
            token = otel_context.attach(extract_context(trace if isinstance(trace, dict) else {}))
            try:
                await self.bus.publish(EVENTS, event_message(event), event.type)
            finally:
                otel_context.detach(token)
            done.append(event.event_id)
        await self.store.mark_published(collection, doc_id, done)
        return len(done)

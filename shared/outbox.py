"""The outbox relay: publishes what a change stored in its outbox, then removes it.

Entries are events (to `rehost.events`) or commands for other services (to
`rehost.commands`, with a stable message id so that the receiver's duplicate
guard absorbs a re-send).

Woken right after each commit and also sweeping on an interval, so an event left
behind by a crash between commit and publish is published on the next sweep (at
least once; integrators dedupe by `event_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aio_pika
import structlog
from opentelemetry import context as otel_context

from shared import metrics
from shared.bus import Bus, Unavailable
from shared.envelope import Event, build_message, event_message
from shared.store import Store, StoreUnavailable
from shared.telemetry import extract_context
from shared.topology import COMMANDS, EVENTS

log = structlog.get_logger(__name__)


def _message(entry: dict[str, Any]) -> tuple[str, aio_pika.Message]:
    """An outbox entry is an event for `rehost.events` or a command for another service."""
    if "command" in entry:
        message = build_message(
            json.dumps(entry["body"]).encode(),
            str(entry["command"]),
            domain_id=str(entry["domain_id"]),
            message_id=str(entry["event_id"]),  # stable: the receiver dedupes a re-send
        )
        if entry.get("expiration"):
            message.expiration = float(entry["expiration"])
        return str(entry.get("exchange", COMMANDS)), message
    return EVENTS, event_message(Event.model_validate(entry))


def _event_labels(entry: dict[str, Any]) -> dict[str, str]:
    labels = {"type": str(entry.get("type"))}
    data = entry.get("data") or {}
    if str(entry.get("type")).startswith("script.") and "status" in data:
        labels["status"] = str(data["status"])
    return labels


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
            docs = await self.store.with_outbox(collection, limit=100)
            # What waits as the sweep begins (its first page, so at most 100 documents' worth).
            backlog = sum(len(d.outbox) for d in docs)
            metrics.outbox_backlog.set(backlog, {"collection": collection})
            while docs:
                for doc in docs:
                    published += await self._publish(collection, doc.id, list(doc.outbox))
                if len(docs) < 100:
                    break
                docs = await self.store.with_outbox(collection, limit=100)
        return published

    async def _publish(self, collection: str, doc_id: str, entries: list[dict[str, Any]]) -> int:
        done: list[str] = []
        for entry in entries:
            trace = entry.get("trace")
            token = otel_context.attach(extract_context(trace if isinstance(trace, dict) else {}))
            try:
                exchange, message = _message(entry)
                await self.bus.publish(exchange, message, str(message.type))
            finally:
                otel_context.detach(token)
            done.append(str(entry["event_id"]))
            metrics.outbox_published.add(1, {"collection": collection})
            if "command" not in entry:
                metrics.events_published.add(1, _event_labels(entry))
        await self.store.mark_published(collection, doc_id, done)
        return len(done)

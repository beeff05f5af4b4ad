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
from typing import Any

import aio_pika
import structlog
from opentelemetry import context as otel_context

from shared import jsoncodec, metrics
from shared.bus import Bus, Unavailable
from shared.envelope import build_message, event_message
from shared.store import Pending, Store, StoreUnavailable
from shared.telemetry import extract_context
from shared.topology import COMMANDS, EVENTS

log = structlog.get_logger(__name__)
PAGE = 100  # documents per read; their entries are published concurrently


def _message(entry: dict[str, Any]) -> tuple[str, aio_pika.Message]:
    """An outbox entry is an event for `rehost.events` or a command for another service."""
    if "command" in entry:
        message = build_message(
            jsoncodec.dump_bytes(entry["body"]),
            str(entry["command"]),
            domain_id=str(entry["domain_id"]),
            message_id=str(entry["event_id"]),  # stable: the receiver dedupes a re-send
        )
        if entry.get("expiration"):
            message.expiration = float(entry["expiration"])
        return str(entry.get("exchange", COMMANDS)), message
    return EVENTS, event_message(entry)


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
        """Publishes every pending entry once; returns how many were published.

        A page of documents is published concurrently (each document's entries in
        order) and marked published in one write, so the relay costs one store
        round trip per page, not per event.
        """
        published = 0
        for collection in self.collections:
            first = True
            while True:
                pending = await self.store.pending(collection, limit=PAGE)
                if first:  # what waits as the sweep begins (at most a page's worth)
                    backlog = sum(len(p.entries) for p in pending)
                    metrics.outbox_backlog.set(backlog, {"collection": collection})
                    first = False
                outcomes = await asyncio.gather(*(self._publish(collection, p) for p in pending))
                done = {p.doc_id: ids for p, (ids, _) in zip(pending, outcomes, strict=True) if ids}
                if done:
                    await self.store.mark_published(collection, done)
                    published += sum(len(ids) for ids in done.values())
                failure = next((error for _, error in outcomes if error is not None), None)
                if failure is not None:
                    raise failure
                if len(pending) < PAGE:
                    break
        return published

    async def _publish(
        self, collection: str, pending: Pending
    ) -> tuple[list[str], Unavailable | None]:
        """Publishes one document's entries, pipelined in their order (the channel sends
        publishes in the order they are made); returns those the broker confirmed."""
        outcomes = await asyncio.gather(
            *(self._publish_one(collection, entry) for entry in pending.entries),
            return_exceptions=True,
        )
        done, failure = [], None
        for entry, outcome in zip(pending.entries, outcomes, strict=True):
            if outcome is None:
                done.append(str(entry["event_id"]))
            elif isinstance(outcome, Unavailable):
                failure = failure or outcome
            else:
                raise outcome
        return done, failure

    async def _publish_one(self, collection: str, entry: dict[str, Any]) -> None:
        trace = entry.get("trace")
        token = otel_context.attach(extract_context(trace if isinstance(trace, dict) else {}))
        try:
            exchange, message = _message(entry)
            await self.bus.publish(exchange, message, str(message.type))
        finally:
            otel_context.detach(token)
        metrics.outbox_published.add(1, {"collection": collection})
        if "command" not in entry:
            metrics.events_published.add(1, _event_labels(entry))

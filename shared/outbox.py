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

        A page of documents' entries is published concurrently (pipelined in order on
        the channel) and marked published in one write, so the relay costs one store
        round trip per page, not per event. The collections take turns a page at a time:
        a backlog in one (a saturated run leaves thousands of results' events) does not
        hold back another's (a channel's `command.completed`, which agents' polls wait for).
        """
        published = 0
        turn = list(self.collections)
        first = True
        while turn:
            full = []
            for collection in turn:
                pending = await self.store.pending(collection, limit=PAGE)
                if first:  # what waits as the sweep begins (at most a page's worth)
                    backlog = sum(len(p.entries) for p in pending)
                    metrics.outbox_backlog.set(backlog, {"collection": collection})
                if pending:
                    published += await self._publish_page(collection, pending)
                if len(pending) == PAGE:
                    full.append(collection)
            turn, first = full, False
        return published

    async def _publish_page(self, collection: str, pending: list[Pending]) -> int:
        """Publishes the page, marks what the broker confirmed, then raises the first
        failure (the rest stays in the outbox for the next sweep)."""
        entries = [(p.doc_id, entry) for p in pending for entry in p.entries]
        outcomes = await asyncio.gather(
            *(self._publish_one(collection, entry) for _, entry in entries),
            return_exceptions=True,
        )
        done: dict[str, list[str]] = {}
        failure: BaseException | None = None
        for (doc_id, entry), outcome in zip(entries, outcomes, strict=True):
            if outcome is None:
                done.setdefault(doc_id, []).append(str(entry["event_id"]))
            elif failure is None or not isinstance(outcome, Unavailable):
                failure = outcome  # a bug outranks an outage
        if done:
            await self.store.mark_published(collection, done)
        if failure is not None:
            raise failure
        return sum(len(ids) for ids in done.values())

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

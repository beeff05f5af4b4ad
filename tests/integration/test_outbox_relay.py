"""The outbox relay over a real store and the real broker: what it publishes, in what order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from shared.aggregates import Decision, NewEvent, apply
from shared.bus import Bus
from shared.envelope import Reply
from shared.outbox import PAGE, OutboxRelay
from shared.store import Document, Store, open_store
from tests.support.integrator import event_tap


async def leave_waiting(store: Store, collection: str, event_type: str) -> None:
    """Creates a document as a handler does, leaving its one event waiting in the outbox."""
    doc = Document(id=uuid.uuid4().hex, domain_id="d1", data={})
    decision = Decision(
        reply=Reply(status=200, body={}), doc=doc, events=(NewEvent(event_type, {}),)
    )
    await apply(store, collection, uuid.uuid4().hex, _nothing, lambda _: decision)


async def _nothing() -> None:
    return None


async def test_a_backlog_in_one_collection_does_not_hold_back_another(
    amqp_url: str, tmp_path: Path
) -> None:
    """Three pages of results' events wait, then one channel's: the relay takes a page
    of each collection in turn, so the channel's event goes out with the first pages."""
    store = open_store(f"sqlite:///{tmp_path / 'relay.db'}")
    await store.open()
    bus = Bus(amqp_url, "relay-test")
    await bus.connect()
    try:
        await asyncio.gather(
            *(leave_waiting(store, "results", "command.result_recorded") for _ in range(3 * PAGE))
        )
        await leave_waiting(store, "channels", "command.completed")
        relay = OutboxRelay(bus, store, ["results", "channels"], interval=60)
        async with event_tap(amqp_url, "command.#") as tap:
            assert await relay.flush() == 3 * PAGE + 1
            events = await tap.wait_for(3 * PAGE + 1)
        order = [e["type"] for e in events]
        assert order.index("command.completed") <= 2 * PAGE, order.index("command.completed")
        assert await store.pending("results", PAGE) == []
        assert await store.pending("channels", PAGE) == []
    finally:
        await bus.close()
        await store.close()

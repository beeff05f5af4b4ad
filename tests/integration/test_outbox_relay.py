"""The outbox relay over a real store and the real broker: what it publishes, in what order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from shared.aggregates import NewEvent, _outbox_entry
from shared.bus import Bus
from shared.outbox import PAGE, OutboxRelay
from shared.store import Change, Document, open_store
from tests.support.integrator import event_tap


def waiting(event_type: str) -> Change:
    """A new document whose change left one event waiting in its outbox."""
    doc = Document(id=uuid.uuid4().hex, domain_id="d1", data={})
    return Change(doc, 0, (_outbox_entry(doc, 1, NewEvent(event_type, {})),))


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
        backlog = [waiting("command.result_recorded") for _ in range(3 * PAGE)]
        await asyncio.gather(*(store.save("results", change) for change in backlog))
        await store.save("channels", waiting("command.completed"))
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

"""The gateway's event feed over the real broker: it keeps following events whatever
happens to the channel it consumes on, since a feed that stops leaves every poll of that
gateway process stale for good."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiormq.exceptions import ChannelNotFoundEntity

from services.gateway.feed import EventFeed
from shared import jsoncodec
from shared.bus import Bus
from shared.envelope import build_message
from shared.topology import EVENTS
from tests.e2e.helpers import eventually

TYPE = "feed.followed"


@pytest.fixture
async def feed(amqp_url: str) -> AsyncIterator[tuple[Bus, EventFeed, list[dict[str, Any]]]]:
    bus = Bus(amqp_url, "feed-test")
    await bus.connect()
    feed = EventFeed(bus, expires=60)
    seen: list[dict[str, Any]] = []
    feed.on(TYPE, seen.append)
    resets: list[None] = []
    feed.on_reset(lambda: resets.append(None))
    await feed.start()
    try:
        yield bus, feed, seen
        assert resets == [], "the queue was never lost: nothing to start afresh from"
    finally:
        await bus.close()


async def followed(bus: Bus, seen: list[dict[str, Any]], n: int) -> None:
    """An event published now reaches the feed's handler."""
    body = jsoncodec.dump_bytes({"type": TYPE, "n": n})
    await bus.publish(EVENTS, build_message(body, TYPE), TYPE)
    await eventually(lambda: _has(seen, n), timeout=5)


async def _has(seen: list[dict[str, Any]], n: int) -> bool:
    return any(event["n"] == n for event in seen)


async def test_a_watcher_that_goes_while_its_binding_is_on_its_way_leaves_the_feed_following(
    feed: tuple[Bus, EventFeed, list[dict[str, Any]]],
) -> None:
    """An operator console that disconnects as its live stream starts cancels the binding
    it asked for; aiormq closes a channel whose call is cancelled mid-way, and the feed
    consumed on that channel."""
    bus, events, seen = feed
    underlay = await events.channel.get_underlay_channel()

    async def a_console() -> None:  # as `live.py` streams
        try:
            await events.watch(("watched.#",))
            await asyncio.Event().wait()
        finally:
            events.unwatch(("watched.#",))

    for turns in range(12):  # some of these land while the binding is on its way
        console = asyncio.create_task(a_console())
        for _ in range(turns):
            await asyncio.sleep(0)
        console.cancel()
        await asyncio.gather(console, return_exceptions=True)
        await asyncio.sleep(0.05)  # its unbinding done: the next console binds afresh
    await followed(bus, seen, 1)
    assert not underlay.is_closed, "a cancelled watcher closed the feed's channel"


async def test_a_channel_the_broker_closes_under_the_feed_is_followed_again(
    feed: tuple[Bus, EventFeed, list[dict[str, Any]]],
) -> None:
    """A channel error (here a 404 on a passive declare) closes the channel, not the
    connection; the queue and what it holds are still there."""
    bus, events, seen = feed
    await followed(bus, seen, 1)
    underlay = await events.channel.get_underlay_channel()
    with pytest.raises(ChannelNotFoundEntity):
        await underlay.queue_declare("rehost.no-such-queue", passive=True)
    await followed(bus, seen, 2)

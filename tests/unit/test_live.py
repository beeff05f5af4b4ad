"""The console's live streams (services/gateway/live.py): a tenant's events only, of the
kinds its reader may read, and bounded: a reader that falls behind is dropped."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError

from services.gateway.console import SignIn
from services.gateway.live import MAX_WAITING, LiveEvents, trace_id


class Feed:
    """The gateway process's event queue, as the hub sees it: taps, resets, watches."""

    def __init__(self) -> None:
        self.taps: list[Any] = []
        self.resets: list[Any] = []
        self.watched: dict[str, int] = {}
        self.bus = type("Bus", (), {"connection": None})()

    def tap(self, callback: Any) -> None:
        self.taps.append(callback)

    def on_reset(self, callback: Any) -> None:
        self.resets.append(callback)

    async def watch(self, patterns: tuple[str, ...]) -> None:
        for p in patterns:
            self.watched[p] = self.watched.get(p, 0) + 1

    def unwatch(self, patterns: tuple[str, ...]) -> None:
        for p in patterns:
            self.watched[p] -= 1

    def send(self, kind: str, domain: str, number: int = 0) -> None:
        event = {"type": kind, "domain_id": domain, "aggregate_id": f"a{number}", "data": {}}
        headers = {"traceparent": f"00-{'ab' * 16}-{'cd' * 8}-01"}
        for tap in self.taps:
            tap(event, headers)


async def read(stream: Any, count: int) -> list[bytes]:
    return [await asyncio.wait_for(anext(stream), 1) for _ in range(count)]


async def test_a_stream_gets_its_tenants_events_of_the_kinds_it_may_read() -> None:
    feed = Feed()
    live = LiveEvents(feed)  # type: ignore[arg-type]
    stream = live.stream("d", ("task.",))
    assert b"event: ready" in (await read(stream, 1))[0]
    assert feed.watched and all(n == 1 for n in feed.watched.values())
    feed.send("task.progress", "other")
    feed.send("script.host.finished", "d")  # not a kind it may read
    feed.send("task.progress", "d")
    [message] = await read(stream, 1)
    assert b'"type":"task.progress"' in message and b'"trace_id":"' + b"ab" * 16 in message
    for reset in feed.resets:
        reset()
    assert b"event: resync" in (await read(stream, 1))[0]
    await stream.aclose()
    assert len(live) == 0 and all(n == 0 for n in feed.watched.values())


async def test_a_reader_that_falls_behind_is_dropped_not_buffered() -> None:
    feed = Feed()
    live = LiveEvents(feed)  # type: ignore[arg-type]
    stream = live.stream("d", ("task.",))
    await read(stream, 1)
    for number in range(MAX_WAITING * 3):
        feed.send("task.progress", "d", number)
    [stream_state] = live._streams
    assert stream_state.waiting.qsize() == MAX_WAITING  # kept no more than its bound
    [last] = await read(stream, 1)  # and what it kept is not sent: it reads the API again
    assert b"event: dropped" in last
    with pytest.raises(StopAsyncIteration):
        await anext(stream)
    assert len(live) == 0


def test_trace_ids_come_from_the_traceparent() -> None:
    assert trace_id({"traceparent": b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"}) == "1" * 32
    assert trace_id({}) == "" and trace_id({"traceparent": "garbage"}) == ""


def test_signing_in_takes_a_token_or_a_key_and_its_secret() -> None:
    assert SignIn(token="t").token == "t" and SignIn(ak="a", sk="s").ak == "a"
    for wrong in ({}, {"ak": "a"}, {"token": "t", "ak": "a", "sk": "s"}):
        with pytest.raises(ValidationError):
            SignIn(**wrong)

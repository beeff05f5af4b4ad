"""What one message costs in CPU at each layer of the AMQP stack.

The tails at half rate are made of per-message CPU (README, "What the tails are made of"),
and most of a message's is the AMQP stack. This prints the µs of this process's CPU for
each of the two halves of a hop, with an event-sized message on a quorum queue, under
uvloop as the services run:

- a confirmed publish, 16 in flight; and a delivery and its ack, 64 prefetched (the
  services' prefetch);
- through aio-pika (for the publish, `Bus.publish` of a `build_message`, what every
  service pays), through aiormq beneath it, and on a bare asyncio protocol whose frames
  are encoded and parsed by hand: the floor of any stack written in Python on this loop,
  one write and one future (or one callback) a message.

The ratios to the floor say how much an AMQP stack of our own could take off a message.

    .venv/bin/python -m bench.message_cost [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import aio_pika
import aiormq
import uvloop
from aiormq.abc import DeliveredMessage
from pamqp import commands, frame

from bench.run import row
from shared.bus import Bus
from shared.envelope import build_message, new_id
from tests.support import broker

QUEUE = "bench.message-cost"
IN_FLIGHT = 16
PREFETCH = 64
WARM = 500
BODY = (
    b'{"event_id":"6f1c0b8e4d2a4c1e9b7f3a5d2c8e1f40","type":"command.result_recorded",'
    b'"aggregate_id":"a3f9c2d1e8b74f6a9c0d1e2f3a4b5c6d","version":3,'
    b'"occurred_at":"2026-12-07T14:00:00.000000+00:00","domain_id":"bench-domain",'
    b'"data":{"server_id":"a3f9c2d1e8b74f6a9c0d1e2f3a4b5c6d","command_name":"START",'
    b'"result":"success","state":"running"}}'
)
ACK, DELIVER = b"\x00\x3c\x00\x50", b"\x00\x3c\x00\x3c"  # Basic.Ack, Basic.Deliver
# (flag bit, property, type) of AMQP 0-9-1's basic properties, in their wire order
PROPERTIES = (
    (15, "content_type", "s"),
    (14, "content_encoding", "s"),
    (13, "headers", "t"),
    (12, "delivery_mode", "o"),
    (11, "priority", "o"),
    (10, "correlation_id", "s"),
    (9, "reply_to", "s"),
    (8, "expiration", "s"),
    (7, "message_id", "s"),
    (6, "timestamp", "q"),
    (5, "type", "s"),
    (4, "user_id", "s"),
    (3, "app_id", "s"),
)


# -- frames by hand -----------------------------------------------------------------------


def _short(text: str) -> bytes:
    encoded = text.encode()
    return bytes([len(encoded)]) + encoded


def _table(values: dict[str, str | int]) -> bytes:
    fields = b"".join(
        _short(k)
        + (
            b"S" + struct.pack(">I", len(v)) + v.encode()
            if isinstance(v, str)
            else b"b" + bytes([v])
        )
        for k, v in values.items()
    )
    return struct.pack(">I", len(fields)) + fields


def _frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BHI", kind, 1, len(payload)) + payload + b"\xce"


def publish_frames(routing_key: str, message_id: str, body: bytes) -> bytes:
    """Basic.Publish, its content header and body, with `build_message`'s properties."""
    method = struct.pack(">HHH", 60, 40, 0) + _short("") + _short(routing_key) + b"\x00"
    sent = {"content_type", "headers", "delivery_mode", "message_id", "timestamp", "type"}
    flags = sum(1 << bit for bit, name, _ in PROPERTIES if name in sent)
    properties = (
        _short("application/json")
        + _table({"schema_version": 1, "domain_id": "bench-domain"})
        + b"\x02"
        + _short(message_id)
        + struct.pack(">Q", int(time.time()))
        + _short(routing_key)
    )
    content = struct.pack(">HHQH", 60, 0, len(body), flags) + properties
    return _frame(1, method) + _frame(2, content) + _frame(3, body)


def _read_short(data: bytes, at: int) -> tuple[str, int]:
    end = at + 1 + data[at]
    return data[at + 1 : end].decode(), end


def _read_table(data: bytes, at: int) -> tuple[dict[str, Any], int]:
    (size,) = struct.unpack_from(">I", data, at)
    at, end = at + 4, at + 4 + size
    table: dict[str, Any] = {}
    while at < end:
        name, at = _read_short(data, at)
        kind, at = data[at : at + 1], at + 1
        if kind == b"S":
            (length,) = struct.unpack_from(">I", data, at)
            table[name], at = data[at + 4 : at + 4 + length].decode(), at + 4 + length
        elif kind == b"b":
            table[name], at = struct.unpack_from(">b", data, at)[0], at + 1
        else:
            raise ValueError(f"a header of type {kind!r}: not in what this bench publishes")
    return table, at


def read_properties(header: bytes) -> dict[str, Any]:
    """A content header's properties (its payload from the flags on)."""
    (flags,) = struct.unpack_from(">H", header, 0)
    at = 2
    found: dict[str, Any] = {}
    for bit, name, kind in PROPERTIES:
        if not flags & 1 << bit:
            continue
        if kind == "s":
            found[name], at = _read_short(header, at)
        elif kind == "t":
            found[name], at = _read_table(header, at)
        elif kind == "o":
            found[name], at = header[at], at + 1
        else:
            found[name], at = struct.unpack_from(">Q", header, at)[0], at + 8
    return found


class BareChannel(asyncio.Protocol):
    """One connection with one confirming channel, and nothing else: no recovery, no
    returns, no flow control. The handshake is pamqp's; publishes, confirms, deliveries
    and acks are encoded and parsed by hand."""

    def __init__(self) -> None:
        self._buffer = b""
        self._confirms: dict[int, asyncio.Future[None]] = {}
        self._published = 0
        self._replies: asyncio.Queue[object] = asyncio.Queue()
        self._delivery: tuple[int, dict[str, Any], int, list[bytes]] | None = None
        self.on_delivery: Callable[[int, dict[str, Any], bytes], None] = lambda *_: None
        self.transport: asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(b"AMQP\x00\x00\x09\x01")

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        while len(buffer) - at >= 7:
            kind, _, size = struct.unpack_from(">BHI", buffer, at)
            end = at + 7 + size
            if len(buffer) <= end:
                break
            self._on_frame(kind, buffer[at + 7 : end])
            at = end + 1
        self._buffer = buffer[at:]

    def _on_frame(self, kind: int, payload: bytes) -> None:
        if kind == 1 and payload[:4] == ACK:
            tag, multiple = struct.unpack_from(">QB", payload, 4)
            for done in [t for t in self._confirms if t <= tag] if multiple else [tag]:
                self._confirms.pop(done).set_result(None)
        elif kind == 1 and payload[:4] == DELIVER:
            (tag,) = struct.unpack_from(">Q", payload, 5 + payload[4])
            self._delivery = (tag, {}, 0, [])
        elif kind == 1:
            method = struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"
            self._replies.put_nowait(frame.unmarshal(method)[2])
        elif kind == 2 and self._delivery is not None:
            (size,) = struct.unpack_from(">Q", payload, 4)
            self._delivery = (self._delivery[0], read_properties(payload[12:]), size, [])
            self._delivered()
        elif kind == 3 and self._delivery is not None:
            self._delivery[3].append(payload)
            self._delivered()

    def _delivered(self) -> None:
        assert self._delivery is not None
        tag, properties, size, parts = self._delivery
        if sum(map(len, parts)) == size:
            self._delivery = None
            self.on_delivery(tag, properties, b"".join(parts))

    async def open(self, user: str, password: str, vhost: str) -> None:
        await self._replies.get()  # Connection.Start
        login = commands.Connection.StartOk(client_properties={}, response=f"\0{user}\0{password}")
        self._send(0, login)
        tune = await self._replies.get()
        assert isinstance(tune, commands.Connection.Tune)
        self._send(0, commands.Connection.TuneOk(tune.channel_max, tune.frame_max, 0))
        await self.call(0, commands.Connection.Open(virtual_host=vhost))
        await self.call(1, commands.Channel.Open())
        await self.call(1, commands.Confirm.Select())

    async def call(self, channel: int, method: object) -> object:
        self._send(channel, method)
        return await self._replies.get()

    def _send(self, channel: int, method: object) -> None:
        self.transport.write(frame.marshal(method, channel))  # type: ignore[arg-type]

    def publish(self, frames: bytes) -> asyncio.Future[None]:
        self._published += 1
        confirmed = asyncio.get_running_loop().create_future()
        self._confirms[self._published] = confirmed
        self.transport.write(frames)
        return confirmed

    def ack(self, tag: int) -> None:
        self.transport.write(_frame(1, ACK + struct.pack(">QB", tag, 0)))


async def bare_channel(amqp_url: str) -> BareChannel:
    parts = urlsplit(amqp_url)
    loop = asyncio.get_running_loop()
    _, channel = await loop.create_connection(
        BareChannel, parts.hostname or "127.0.0.1", parts.port or 5672
    )
    vhost = unquote(parts.path[1:]) or "/"
    await channel.open(parts.username or "guest", parts.password or "guest", vhost)
    return channel


# -- the measures -------------------------------------------------------------------------


async def publish_cost(publish: Callable[[], Awaitable[object]], count: int) -> float:
    """µs of this process's CPU per `publish`, `IN_FLIGHT` at a time, after a warm-up."""
    window = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with window:
            await publish()

    await asyncio.gather(*(one() for _ in range(WARM)))
    started = time.process_time()
    await asyncio.gather(*(one() for _ in range(count)))
    return (time.process_time() - started) / count * 1e6


class Counted:
    """Counts deliveries: the CPU from the warm-up's last to the `count`th after it."""

    def __init__(self, count: int) -> None:
        self.count, self.seen = count, 0
        self.started = 0.0
        self.done = asyncio.get_running_loop().create_future()

    def one(self) -> None:
        self.seen += 1
        if self.seen == WARM:
            self.started = time.process_time()
        elif self.seen == WARM + self.count:
            self.done.set_result((time.process_time() - self.started) / self.count * 1e6)


Stop = Callable[[], Awaitable[object]]


async def by_aio_pika(amqp_url: str, bare: BareChannel, counted: Counted) -> Stop:
    connection = await aio_pika.connect(amqp_url)
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=PREFETCH)
    queue = await channel.get_queue(QUEUE, ensure=False)

    async def taken(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        counted.one()

    await queue.consume(taken)
    return connection.close


async def by_aiormq(amqp_url: str, bare: BareChannel, counted: Counted) -> Stop:
    connection = await aiormq.connect(amqp_url)
    channel = await connection.channel()
    await channel.basic_qos(prefetch_count=PREFETCH)

    async def taken(message: DeliveredMessage) -> None:
        await channel.basic_ack(message.delivery_tag or 0)
        counted.one()

    await channel.basic_consume(QUEUE, taken)
    return connection.close


async def by_hand(amqp_url: str, bare: BareChannel, counted: Counted) -> Stop:
    def taken(tag: int, properties: dict[str, Any], body: bytes) -> None:
        bare.ack(tag)
        counted.one()

    bare.on_delivery = taken
    await bare.call(1, commands.Basic.Qos(prefetch_count=PREFETCH))
    await bare.call(1, commands.Basic.Consume(queue=QUEUE))

    async def stop() -> None:  # the consumer itself ends with the bare connection
        bare.on_delivery = lambda *_: None

    return stop


async def consume_costs(amqp_url: str, bare: BareChannel, count: int) -> dict[str, float]:
    """µs of CPU per delivery and its ack, the queue preloaded with `WARM + count` for each
    layer in turn (by the bare channel, whose publishes cost least)."""
    costs = {}
    for layer, consume in (("aio-pika", by_aio_pika), ("aiormq", by_aiormq), ("bare", by_hand)):
        for _ in range(WARM + count):
            confirmed = bare.publish(publish_frames(QUEUE, new_id(), BODY))
        await confirmed  # the broker confirms in order
        counted = Counted(count)
        stop = await consume(amqp_url, bare, counted)
        costs[layer] = await counted.done
        await stop()
    return costs


async def layers(amqp_url: str, count: int) -> dict[str, dict[str, float]]:
    """One run of every layer: {"publish": {layer: µs}, "consume": {layer: µs}}."""
    bus = Bus(amqp_url, "bench-message-cost")
    await bus.connect()
    assert isinstance(bus.channel, aio_pika.Channel)
    queue = await bus.channel.declare_queue(
        QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
    )
    raw = bus.channel.channel  # aiormq's, beneath aio-pika's
    bare = await bare_channel(amqp_url)

    async def through_aiormq() -> object:
        message = build_message(BODY, QUEUE, domain_id="bench-domain")
        return await raw.basic_publish(
            message.body, exchange="", routing_key=QUEUE, properties=message.properties
        )

    def by_bus() -> Awaitable[None]:
        return bus.publish("", build_message(BODY, QUEUE, domain_id="bench-domain"), QUEUE)

    publish = {
        "aio-pika": await publish_cost(by_bus, count),
        "aiormq": await publish_cost(through_aiormq, count),
        "bare": await publish_cost(
            lambda: bare.publish(publish_frames(QUEUE, new_id(), BODY)), count
        ),
    }
    await queue.purge()
    consume = await consume_costs(amqp_url, bare, count)
    bare.transport.close()
    await queue.delete(if_unused=False, if_empty=False)
    await bus.close()
    return {"publish": publish, "consume": consume}


NAMES = {
    ("publish", "aio-pika"): "a confirmed publish through `Bus.publish` (aio-pika)",
    ("publish", "aiormq"): "the same through aiormq's `basic_publish`",
    ("publish", "bare"): "the same frames encoded by hand on a bare protocol",
    ("consume", "aio-pika"): "a delivery and its ack through aio-pika's consumer",
    ("consume", "aiormq"): "the same through aiormq's `basic_consume` and `basic_ack`",
    ("consume", "bare"): "the same frames parsed by hand on a bare protocol",
}


async def main(quick: bool) -> None:
    broker.ensure_running()
    vhost = broker.create_vhost()
    try:
        async with asyncio.timeout(900):  # a message never confirmed fails the run, not hangs it
            url = broker.amqp_url(vhost)
            runs = [await layers(url, 5_000 if quick else 20_000) for _ in range(3)]
    finally:
        if vhost:
            broker.delete_vhost(vhost)
    print("| measure | Rehost | floor | ratio |\n|---|---|---|---|")
    for (half, layer), name in NAMES.items():
        each = [run[half][layer] for run in runs]
        median, floor = statistics.median(each), statistics.median(r[half]["bare"] for r in runs)
        shown = f"{median:.0f} ({' / '.join(f'{c:.0f}' for c in each)})"
        print(row(f"{name}: µs of CPU, three runs", shown, f"{floor:.0f}", median / floor))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5,000 messages a run, not 20,000")
    uvloop.run(main(parser.parse_args().quick))

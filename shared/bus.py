"""The bus: one robust RabbitMQ connection, confirmed publishes, and request/reply.

Every publish waits for the broker's confirm. Requests use RabbitMQ's direct
reply-to (`amq.rabbitmq.reply-to`), so the gateway needs no reply queue of its own;
replies are matched by correlation id and a request that gets none in time fails
with `Unavailable`, which the gateway answers as 503.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Protocol

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from aiormq.exceptions import ChannelInvalidStateError
from opentelemetry import trace

from shared import failover, metrics
from shared.envelope import Incoming, Reply, build_message, new_id
from shared.telemetry import span
from shared.topology import COMMANDS, EVENTS, declare_exchanges

log = structlog.get_logger(__name__)
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
H_DEADLINE = "x-deadline"


class Unavailable(Exception):
    """The broker or the service behind it did not answer in time."""


class Overloaded(Unavailable):
    """Too many requests are already waiting for replies."""


class Bus:
    """A robust connection with one confirmed publishing channel, and one for replies."""

    def __init__(self, url: str, name: str) -> None:
        self.url = url
        self.name = name
        self.connection: AbstractRobustConnection | None = None
        self.channel: AbstractChannel | None = None
        self.replies: AbstractChannel | None = None

    async def connect(self, timeout: float = 10.0) -> None:
        await self.connect_plain(timeout)
        assert self.channel is not None
        await declare_exchanges(self.channel)

    async def connect_plain(self, timeout: float = 10.0) -> None:
        """Connects without declaring anything: for agents, whose account may not."""
        # `url` may name several nodes of a cluster: any that answers will do (failover.py).
        self.connection = await failover.connect(self.url, self.name, timeout)
        self.channel = await self.connection.channel(publisher_confirms=True)
        # A reply is for a caller that waits: lost with a connection, the caller answers 503
        # and the client retries, which the duplicate guard answers alike. Waiting for the
        # broker to confirm each would only delay the ack of the message it answers.
        self.replies = await self.connection.channel(publisher_confirms=False)

    @property
    def ready(self) -> bool:
        return bool(
            self.connection
            and not self.connection.is_closed
            and self.channel
            and not self.channel.is_closed
        )

    async def new_channel(self, prefetch: int | None = None) -> AbstractChannel:
        if self.connection is None:
            raise Unavailable("not connected")
        channel = await self.connection.channel(publisher_confirms=True)
        if prefetch:
            await channel.set_qos(prefetch_count=prefetch)
        return channel

    async def publish(
        self,
        exchange: str,
        message: aio_pika.Message,
        routing_key: str,
        *,
        timeout: float = 10.0,
        channel: AbstractChannel | None = None,
        span_name: str | None = None,
    ) -> None:
        """Publishes and waits for the broker's confirm; raises Unavailable otherwise."""
        channel = channel or self.channel
        if channel is None or channel.is_closed or not self.ready:
            raise Unavailable("broker connection is down")
        # An event nobody subscribes to is simply not routed, and a reply whose caller has
        # gone is dropped; asking the broker to return either would cost a frame back.
        mandatory = exchange != EVENTS and channel is not self.replies
        with span(span_name or f"{routing_key} publish", trace.SpanKind.PRODUCER):
            try:
                ex = (
                    channel.default_exchange
                    if exchange == ""
                    else await channel.get_exchange(exchange, ensure=False)
                )
                await ex.publish(
                    message, routing_key=routing_key, timeout=timeout, mandatory=mandatory
                )
            except (
                TimeoutError,
                ConnectionError,
                aio_pika.exceptions.AMQPError,
                ChannelInvalidStateError,  # the channel closed under us: the broker went away
            ) as exc:
                raise Unavailable(f"publish failed: {exc!r}") from exc

    async def reply(self, incoming: Incoming, reply: Reply) -> None:
        await self.answer(incoming.reply_to, incoming.correlation_id, reply)

    async def answer(self, reply_to: str | None, correlation_id: str | None, reply: Reply) -> None:
        """Replies to a request, from any channel: also later, from another delivery."""
        if not reply_to:
            return
        message = build_message(
            reply.model_dump_json().encode(), "reply", correlation_id=correlation_id
        )
        # A reply is for a waiting caller only; it need not survive a broker restart.
        message.delivery_mode = aio_pika.DeliveryMode.NOT_PERSISTENT
        await self.publish("", message, reply_to, channel=self.replies, span_name="reply publish")

    async def close(self) -> None:
        if self.connection and not self.connection.is_closed:
            await self.connection.close()


class Requests(Protocol):
    """What a handler needs of the bus to ask another service: a request and its reply,
    or a command told and left (`tell`). `Requester` is the real one; tests script a fake."""

    async def request(
        self,
        routing_key: str,
        body: bytes,
        *,
        domain_id: str,
        actor: str = "",
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Reply: ...

    async def tell(
        self,
        routing_key: str,
        body: bytes,
        *,
        domain_id: str,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None: ...


class Requester:
    """Publishes commands and waits for their replies over direct reply-to."""

    def __init__(self, bus: Bus, timeout: float, max_in_flight: int) -> None:
        self.bus = bus
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._channel: AbstractChannel | None = None

    async def start(self) -> None:
        # Direct reply-to requires publishing on the channel that consumes the replies.
        self._channel = await self.bus.new_channel()
        # Declared (passively) so that the robust channel restores the consumer on reconnect.
        queue = await self._channel.declare_queue(DIRECT_REPLY_TO, passive=True)
        await queue.consume(self._on_reply, no_ack=True)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is not None and not future.done():
            future.set_result(Reply.model_validate_json(message.body))

    async def request(
        self,
        routing_key: str,
        body: bytes,
        *,
        domain_id: str,
        actor: str = "",
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> Reply:
        timeout = timeout or self.timeout
        if len(self._pending) >= self.max_in_flight:
            raise Overloaded("too many requests in flight")
        correlation_id = new_id()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        # Epoch milliseconds as an integer: AMQP tables would carry a float as 32 bits.
        deadline_ms = int((time.time() + timeout) * 1000)
        headers: dict[str, Any] = {"actor": actor, H_DEADLINE: deadline_ms}
        try:
            async with asyncio.timeout(timeout):
                message = build_message(
                    body,
                    routing_key,
                    domain_id=domain_id,
                    message_id=message_id,
                    correlation_id=correlation_id,
                    reply_to=DIRECT_REPLY_TO,
                    headers=headers,
                )
                await self.bus.publish(
                    COMMANDS, message, routing_key, timeout=timeout, channel=self._channel
                )
                return await future
        except TimeoutError as exc:
            metrics.reply_timeouts.add(1, {"routing_key": routing_key})
            raise Unavailable(f"no reply to {routing_key} within {timeout}s") from exc
        finally:
            self._pending.pop(correlation_id, None)

    async def tell(
        self,
        routing_key: str,
        body: bytes,
        *,
        domain_id: str,
        message_id: str | None = None,
        timeout: float | None = None,
    ) -> None:
        """Sends a command nobody answers: it returns once the broker has confirmed it, so
        the command is kept (persistent, on a quorum queue) whatever happens to this process."""
        message = build_message(body, routing_key, domain_id=domain_id, message_id=message_id)
        await self.bus.publish(
            COMMANDS, message, routing_key, timeout=timeout or self.timeout, channel=self._channel
        )

"""RabbitMQ topology, declared idempotently by every process at start.

- `rehost.commands` (topic): commands and queries, routed to one quorum queue per service.
- `rehost.events` (topic): state changes; integrators bind their own queues to it.
- `rehost.dlx` (direct): dead letters, routed by service name to `rehost.<service>.dlq`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractQueue

COMMANDS = "rehost.commands"
EVENTS = "rehost.events"
DLX = "rehost.dlx"


@dataclass(frozen=True)
class ServiceQueue:
    """One of a service's queues: its commands (`rehost.<service>`), or the events it
    follows (`rehost.<service>.events`), so that events never wait behind commands."""

    service: str
    bindings: tuple[str, ...] = ()
    event_bindings: tuple[str, ...] = ()
    suffix: str = ""
    # Event keys an earlier release bound to this queue, unbound when it is declared.
    moved_event_bindings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"rehost.{self.service}{self.suffix}"

    @property
    def dead_letter_queue(self) -> str:
        return f"rehost.{self.service}.dlq"


def queue_arguments(service: str, delivery_limit: int) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DLX,
        "x-dead-letter-routing-key": service,
    }


async def declare_exchanges(channel: AbstractChannel) -> None:
    await channel.declare_exchange(COMMANDS, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(EVENTS, aio_pika.ExchangeType.TOPIC, durable=True)
    await channel.declare_exchange(DLX, aio_pika.ExchangeType.DIRECT, durable=True)


async def declare_service_queue(
    channel: AbstractChannel, queue: ServiceQueue, delivery_limit: int
) -> AbstractQueue:
    await declare_exchanges(channel)
    dlq = await channel.declare_queue(
        queue.dead_letter_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dlq.bind(DLX, routing_key=queue.service)
    main = await channel.declare_queue(
        queue.name, durable=True, arguments=queue_arguments(queue.service, delivery_limit)
    )
    for key in queue.bindings:
        await main.bind(COMMANDS, routing_key=key)
    for key in queue.event_bindings:
        await main.bind(EVENTS, routing_key=key)
    for key in queue.moved_event_bindings:
        await main.unbind(EVENTS, routing_key=key)
    return main


# An agent's queue: replicated, like every queue of Rehost's (the broker's default number
# of replicas, `quorum_cluster_size`: 3).
AGENT_QUEUE: dict[str, Any] = {"x-queue-type": "quorum"}


def agent_queue(agent_sn: str) -> str:
    """The queue an agent consumes, fed through the default exchange."""
    return f"rehost.agent.{agent_sn}"


def agent_sn_of(routing_key: str) -> str | None:
    """The SN of an agent event's routing key (`agent.<SN>.heartbeat`), which the broker's
    topic permissions vouch for."""
    parts = routing_key.split(".")
    return parts[1] if len(parts) == 3 and parts[0] == "agent" and parts[1] else None

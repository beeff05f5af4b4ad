"""Runs one consumer service: the single place where real adapters are wired in.

Connects the store and the bus (retrying until both answer), declares the
service's queue, starts the consumer, the outbox relay and the health port, and
on SIGTERM or SIGINT shuts down gracefully: stop consuming, finish in-flight work,
flush the outbox, close.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aio_pika.exceptions import AMQPError
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential

from shared.bus import Bus, Requester, Unavailable
from shared.config import Settings
from shared.consumer import Consumer, Handler
from shared.errors import Family
from shared.health import HealthServer
from shared.heap import freeze_startup_objects
from shared.logs import configure_logging
from shared.outbox import OutboxRelay
from shared.store import Store, StoreUnavailable, open_store
from shared.telemetry import setup_tracing
from shared.topology import ServiceQueue

log = structlog.get_logger(__name__)


class HandlerSet(Protocol):
    """A service's handlers: one per routing key (topic patterns with `*` allowed)."""

    def routes(self) -> dict[str, Handler]: ...


@dataclass(frozen=True)
class ServiceDefinition:
    name: str
    bindings: tuple[str, ...]
    # Each collection it owns, with the fields its queries match on by equality: the
    # store makes their indexes at start.
    collections: dict[str, tuple[str, ...]]
    handlers: Callable[[Store, Requester, Settings], HandlerSet]
    health_port: Callable[[Settings], int]
    event_bindings: tuple[str, ...] = ()
    family: Family = Family.SMS
    # Background work run every `period` seconds (timeouts, sweeps).
    periodic: Callable[[Any], Awaitable[None]] | None = None
    period: float = 1.0

    def queues(self) -> list[ServiceQueue]:
        """Its commands' queue, and the events' queue when it follows events: each has its
        own consumer, so an event never waits behind a command (nor the reverse)."""
        commands = ServiceQueue(self.name, self.bindings, moved_event_bindings=self.event_bindings)
        if not self.event_bindings:
            return [commands]
        return [
            commands,
            ServiceQueue(self.name, event_bindings=self.event_bindings, suffix=".events"),
        ]


async def wait_until_up(what: str, attempt: Callable[[], object]) -> None:
    """Retries `attempt` with back-off until it succeeds: a dependency that is down at start."""
    async for retry in AsyncRetrying(
        retry=retry_if_exception_type((OSError, AMQPError, Unavailable, StoreUnavailable)),
        wait=wait_exponential(multiplier=0.2, max=5),
        before_sleep=lambda state: log.warning(
            "waiting_for", dependency=what, error=repr(state.outcome and state.outcome.exception())
        ),
    ):
        with retry:
            result = attempt()
            if asyncio.iscoroutine(result):
                await result


async def run_service(definition: ServiceDefinition, settings: Settings) -> None:
    configure_logging(definition.name, settings.log_format, settings.log_level)
    setup_tracing(definition.name)
    store = open_store(settings.store_url_for(definition.name))
    await wait_until_up("store", store.open)
    await wait_until_up("store", store.ping)
    await wait_until_up("store", lambda: store.prepare(definition.collections))
    bus = Bus(settings.amqp_url, f"rehost-{definition.name}")
    await wait_until_up("broker", bus.connect)

    requester = Requester(bus, settings.reply_timeout, settings.max_in_flight)
    await requester.start()
    handlers = definition.handlers(store, requester, settings)
    relay = OutboxRelay(bus, store, list(definition.collections), settings.outbox_interval)
    routes = handlers.routes()
    consumers = [
        _consumer(definition, settings, bus, relay, routes, queue) for queue in definition.queues()
    ]

    async def readiness() -> dict[str, bool]:
        try:
            await store.ping()
            store_ok = all(c.store_ok for c in consumers)
        except StoreUnavailable:
            store_ok = False
        # Ready once it takes messages: a replica that answered before it consumed
        # would be counted on by whoever waited for it (a rollout, a test).
        consuming = all(c.consuming for c in consumers)
        return {"broker": bus.ready, "store": store_ok, "consuming": consuming}

    health = HealthServer(settings.health_host, definition.health_port(settings), readiness)
    await health.start()
    freeze_startup_objects()
    for consumer in consumers:
        await consumer.start()
    relay.start()
    ticker = _start_periodic(definition, handlers, relay)
    log.info("service.started", queues=[c.queue.name for c in consumers])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("service.stopping")
    if ticker is not None:
        ticker.cancel()
    await asyncio.gather(*(c.stop() for c in consumers))
    try:
        await relay.flush()
    except (Unavailable, StoreUnavailable) as exc:
        log.warning("outbox.left_for_next_start", error=str(exc))
    await relay.stop()
    await bus.close()
    await store.close()
    await health.stop()
    log.info("service.stopped")


def _consumer(
    definition: ServiceDefinition,
    settings: Settings,
    bus: Bus,
    relay: OutboxRelay,
    routes: dict[str, Handler],
    queue: ServiceQueue,
) -> Consumer:
    return Consumer(
        bus,
        queue,
        routes,
        prefetch=settings.prefetch,
        delivery_limit=settings.delivery_limit,
        after_commit=relay.wake,
        family=definition.family,
        max_message_bytes=settings.max_message_bytes,
    )


def _start_periodic(
    definition: ServiceDefinition, handlers: HandlerSet, relay: OutboxRelay
) -> asyncio.Task[None] | None:
    work = definition.periodic
    if work is None:
        return None

    async def tick() -> None:
        while True:
            await asyncio.sleep(definition.period)
            try:
                await work(handlers)
                relay.wake()
            except (Unavailable, StoreUnavailable) as exc:
                log.warning("periodic.skipped", error=str(exc))
            except Exception:
                log.exception("periodic.crashed")

    return asyncio.create_task(tick(), name=f"{definition.name}-periodic")

"""A service's consumer: one quorum queue, a handler per routing key, and the
reliability rules (README, Reliability) applied to every delivery.

- Ack only after the handler returned, i.e. after its write is durable.
- A message that can never succeed (bad JSON, wrong schema, unknown routing key)
  is dead-lettered at once with the reason in `x-rehost-reason`.
- A store outage holds the message and retries until the store is back: it is
  neither acked nor counted towards the delivery limit.
- Any other failure is requeued after a short back-off; the quorum queue's
  delivery limit dead-letters a message that keeps failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from shared import metrics
from shared.aggregates import refusal
from shared.bus import H_DEADLINE, Bus, Unavailable
from shared.envelope import H_REASON, SCHEMA_VERSION, Incoming, Reply, build_message, decode
from shared.errors import ApiError, Family, SmsCode
from shared.store import StoreUnavailable
from shared.telemetry import continued
from shared.topology import DLX, ServiceQueue, declare_service_queue

log = structlog.get_logger(__name__)
Handler = Callable[[Incoming], Awaitable[Reply | None]]
H = TypeVar("H", bound=Callable[..., Awaitable[Reply | None]])  # a function or a method


def query(handler: H) -> H:
    """Marks a handler as a query: it changes nothing, so a delivery whose caller gave up
    waiting (past its `x-deadline`) is skipped instead of answered to nobody."""
    setattr(handler, "is_query", True)  # noqa: B010 (a function's attribute: no other way)
    return handler


def is_query(handler: Handler) -> bool:
    return bool(getattr(handler, "is_query", False))


class PermanentError(Exception):
    """This message can never be handled; it goes to the dead-letter queue."""


def tenant(incoming: Incoming) -> str:
    """The message's tenant; a command without one can never be handled."""
    if not incoming.domain_id:
        raise PermanentError("the domain_id header is missing")
    return incoming.domain_id


def without_values(exc: ValidationError) -> str:
    """What is wrong with a body, without the values it held: a reason is logged and kept
    in the dead-letter queue, and a value may be a secret (a sensitive script parameter)."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )


class _ShuttingDown(Exception):
    """Raised instead of retrying once the consumer stops: the message is requeued."""


class Consumer:
    def __init__(
        self,
        bus: Bus,
        queue: ServiceQueue,
        handlers: dict[str, Handler],
        *,
        prefetch: int,
        delivery_limit: int,
        after_commit: Callable[[], None] = lambda: None,
        family: Family = Family.SMS,
        max_message_bytes: int = 4_194_304,
    ) -> None:
        self.bus = bus
        self.queue = queue
        self.handlers = handlers
        self.prefetch = prefetch
        self.delivery_limit = delivery_limit
        self.after_commit = after_commit
        self.family = family
        self.max_message_bytes = max_message_bytes
        self.store_ok = True
        self._channel: AbstractChannel | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._stopping = False

    async def start(self) -> None:
        self._channel = await self.bus.new_channel(prefetch=self.prefetch)
        queue = await declare_service_queue(self._channel, self.queue, self.delivery_limit)
        self._queue = queue
        self._tag = await queue.consume(self._on_message)

    @property
    def consuming(self) -> bool:
        """Registered with the broker as a consumer of its queue, and not stopping."""
        return self._tag is not None and not self._stopping

    async def stop(self, grace: float = 10.0) -> None:
        """Stops taking messages, lets in-flight ones finish, and requeues the rest."""
        self._stopping = True
        if self._tag is not None and self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._queue.cancel(self._tag)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=grace)
        if self._channel is not None and not self._channel.is_closed:
            with contextlib.suppress(Exception):
                await self._channel.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        started = time.perf_counter()
        try:
            incoming = decode(message)
            self._count(incoming, "consumed")
            with continued(
                message.headers,
                f"{incoming.routing_key} process",
                **{"messaging.message.id": incoming.message_id},
            ):
                await self._handle(message, incoming)
            elapsed = (time.perf_counter() - started) * 1000
            metrics.handler_duration.record(elapsed, self._labels(incoming))
        finally:
            if task is not None:
                self._in_flight.discard(task)

    def _labels(self, incoming: Incoming) -> dict[str, str]:
        return {"queue": self.queue.name, "routing_key": incoming.routing_key}

    def _count(self, incoming: Incoming, outcome: str) -> None:
        metrics.messages.add(1, {**self._labels(incoming), "outcome": outcome})

    async def _handle(self, message: AbstractIncomingMessage, incoming: Incoming) -> None:
        try:
            handler = self._handler_for(incoming)
            if is_query(handler) and self._past_deadline(incoming):
                await message.ack()
                return
            reply = await self._run_until_dependencies_answer(handler, incoming)
        except PermanentError as exc:
            await self._dead_letter(message, incoming, str(exc))
            return
        except _ShuttingDown:
            await self._requeue(message)
            return
        except asyncio.CancelledError:
            await self._requeue(message)
            raise
        except Exception as exc:
            log.exception("message.failed", routing_key=incoming.routing_key, error=repr(exc))
            await asyncio.sleep(min(0.2 * 2**incoming.delivery_count, 5.0))
            await self._requeue(message)
            self._count(incoming, "requeued")
            return
        self.after_commit()
        if reply is not None:
            with contextlib.suppress(Unavailable):
                await self.bus.reply(incoming, reply)
        await message.ack()
        self._count(incoming, "acked")

    def _handler_for(self, incoming: Incoming) -> Handler:
        if len(incoming.body) > self.max_message_bytes:
            raise PermanentError(
                f"oversized: {len(incoming.body)} bytes, the limit is {self.max_message_bytes}"
            )
        if incoming.schema_version != SCHEMA_VERSION:
            raise PermanentError(f"unsupported schema_version {incoming.schema_version}")
        handler = self.handlers.get(incoming.routing_key) or self._by_pattern(incoming.routing_key)
        if handler is None:
            raise PermanentError(f"unknown routing key {incoming.routing_key!r}")
        return handler

    def _by_pattern(self, routing_key: str) -> Handler | None:
        words = routing_key.split(".")
        for pattern, handler in self.handlers.items():
            parts = pattern.split(".")
            matches = "*" in parts and len(parts) == len(words)
            if matches and all(p in ("*", w) for p, w in zip(parts, words, strict=True)):
                return handler
        return None

    def _past_deadline(self, incoming: Incoming) -> bool:
        # Nobody waits for the answer to a query past its deadline; a command is
        # applied all the same, since its caller may retry and must find it done.
        deadline = incoming.headers.get(H_DEADLINE)
        return isinstance(deadline, int) and deadline < time.time() * 1000

    async def _run_until_dependencies_answer(
        self, handler: Handler, incoming: Incoming
    ) -> Reply | None:
        delay = 0.1
        while True:
            if self._stopping:
                raise _ShuttingDown()
            try:
                reply = await self._call(handler, incoming)
            except (StoreUnavailable, Unavailable) as exc:
                # A dependency is down, not the message bad: hold it, never dead-letter it.
                self.store_ok = not isinstance(exc, StoreUnavailable)
                log.warning("dependency.unavailable", error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.store_ok = True
            return reply

    async def _call(self, handler: Handler, incoming: Incoming) -> Reply | None:
        try:
            return await handler(incoming)
        except ApiError as exc:
            return refusal(exc.code, exc.message, exc.params)
        except ValidationError as exc:
            raise PermanentError(f"malformed body: {without_values(exc)}") from exc
        except ValueError as exc:
            raise PermanentError(f"malformed body: {exc}") from exc

    async def _requeue(self, message: AbstractIncomingMessage) -> None:
        with contextlib.suppress(Exception):
            await message.nack(requeue=True)

    async def _dead_letter(
        self, message: AbstractIncomingMessage, incoming: Incoming, reason: str
    ) -> None:
        log.warning("message.dead_lettered", routing_key=incoming.routing_key, reason=reason)
        headers = {
            **incoming.headers,
            H_REASON: reason[:1000],
            "x-original-routing-key": incoming.routing_key,
        }
        copy = build_message(
            message.body,
            incoming.routing_key,
            message_id=incoming.message_id,
            correlation_id=incoming.correlation_id,
            headers=headers,
        )
        try:
            await self.bus.publish(DLX, copy, self.queue.service)
        except Unavailable:
            await self._requeue(message)
            return
        if incoming.reply_to:
            error = ApiError(SmsCode.INVALID_PARAMETER, reason[:1000]).in_family(self.family)
            with contextlib.suppress(Unavailable):
                await self.bus.reply(incoming, Reply(status=400, body=error.body()))
        await message.ack()
        self._count(incoming, "dead_lettered")

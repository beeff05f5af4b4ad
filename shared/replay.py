"""Replaying dead letters: each goes back to `rehost.commands` under the routing key it was
first sent with, keeping its body, id and headers, once the cause is fixed.

A message is acknowledged on the dead-letter queue only after its re-publish is
confirmed, so a replay that stops half-way loses nothing.
"""

from __future__ import annotations

from typing import Any

import aio_pika

from shared import failover
from shared.envelope import H_REASON
from shared.topology import COMMANDS, ServiceQueue


def original_routing_key(headers: dict[str, Any], fallback: str) -> str:
    """Ours in `x-original-routing-key`; the broker's in `x-death` (delivery limit)."""
    if key := headers.get("x-original-routing-key"):
        return key.decode() if isinstance(key, bytes) else str(key)
    deaths = headers.get("x-death") or []
    if deaths and deaths[0].get("routing-keys"):
        key = deaths[0]["routing-keys"][0]
        return key.decode() if isinstance(key, bytes) else str(key)
    return fallback


def _death_reason(headers: dict[str, Any]) -> str:
    deaths = headers.get("x-death") or [{}]
    return str(deaths[0].get("reason", ""))


def _cleaned(headers: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v for k, v in headers.items() if k not in ("x-death", H_REASON, "x-original-routing-key")
    }


async def replay(amqp_url: str, service: str, limit: int, dry_run: bool = False) -> list[str]:
    queue_name = ServiceQueue(service, ()).dead_letter_queue
    lines: list[str] = []
    connection = await failover.connect(amqp_url, "rehost-replay")
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(queue_name, passive=True)
        exchange = await channel.get_exchange(COMMANDS)
        held = []
        for _ in range(limit):
            message = await queue.get(fail=False, no_ack=False)
            if message is None:
                break
            headers: dict[str, Any] = dict(message.headers or {})
            key = original_routing_key(headers, message.routing_key or "")
            reason = headers.get(H_REASON) or _death_reason(headers)
            lines.append(f"{message.message_id} {key} {reason!s}")
            if dry_run:
                held.append(message)
                continue
            copy = aio_pika.Message(
                message.body,
                message_id=message.message_id,
                type=message.type,
                content_type=message.content_type,
                timestamp=message.timestamp,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                correlation_id=message.correlation_id,
                headers=_cleaned(headers),
            )
            await exchange.publish(copy, routing_key=key)
            await message.ack()
        for message in held:
            await message.nack(requeue=True)
    lines.append(
        f"{'would replay' if dry_run else 'replayed'} {len(lines)} message(s) from {queue_name}"
    )
    return lines

"""What an integrator sees over AMQP: events on `rehost.events`, commands on `rehost.commands`."""

from __future__ import annotations

import asyncio
import json
import uuid

import aio_pika
import httpx

from shared.envelope import SCHEMA_VERSION
from shared.topology import COMMANDS
from tests.conftest import auth
from tests.e2e.test_sources_api import register, server
from tests.support.integrator import event_tap


async def test_each_change_emits_one_event_with_the_envelope(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    async with event_tap(amqp_url, "source.*") as tap:
        body = server()
        server_id = await register(client, body)
        await register(client, {**body, "memory": 4096})
        await register(client, {**body, "memory": 4096})  # no change: no event
        assert (await client.delete(f"/v3/sources/{server_id}", headers=auth())).status_code == 200
        await tap.wait_for(3, server_id)
        await tap.settle()

    events = tap.of(server_id)
    assert [e["type"] for e in events] == ["source.registered", "source.updated", "source.deleted"]
    assert [e["aggregate_version"] for e in events] == [1, 2, 3]
    assert events[1]["data"]["changed"] == ["memory"]
    assert events[0]["data"]["server"]["hostname"] == body["hostname"]
    assert len({e["event_id"] for e in events}) == 3
    for received in (r for r in tap.received if r.body["aggregate_id"] == server_id):
        message, event = received.message, received.body
        assert message.message_id == event["event_id"]
        assert message.type == event["type"] == message.routing_key
        assert message.content_type == "application/json"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.timestamp is not None
        assert message.headers["domain_id"] == "domain-a" == event["domain_id"]
        assert message.headers["schema_version"] == SCHEMA_VERSION
        assert "traceparent" in message.headers
        assert event["occurred_at"]


async def request_over_amqp(
    amqp_url: str, routing_key: str, body: bytes, domain: str, message_id: str | None = None
) -> dict[str, object]:
    """Publishes a command as an integrator would, and waits for its reply."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True)
        correlation_id = uuid.uuid4().hex
        exchange = await channel.get_exchange(COMMANDS)
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id or uuid.uuid4().hex,
                correlation_id=correlation_id,
                reply_to=replies.name,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                headers={"domain_id": domain},
            ),
            routing_key=routing_key,
        )
        async with asyncio.timeout(10), replies.iterator() as messages:
            async for message in messages:
                await message.ack()
                if message.correlation_id == correlation_id:
                    reply: dict[str, object] = json.loads(message.body)
                    return reply
    raise AssertionError("no reply")


async def test_a_command_published_directly_has_the_same_effect(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    body = server()
    async with event_tap(amqp_url, "source.registered") as tap:
        reply = await request_over_amqp(
            amqp_url, "sms.source.register", json.dumps(body).encode(), "domain-a"
        )
        assert reply["status"] == 200
        server_id = reply["body"]["id"]  # type: ignore[index]
        await tap.wait_for(1, server_id)
    shown = await client.get(f"/v3/sources/{server_id}", headers=auth())
    assert shown.status_code == 200
    assert shown.json()["hostname"] == body["hostname"]
    # …and the HTTP call for the same host finds that very server.
    assert await register(client, body) == server_id

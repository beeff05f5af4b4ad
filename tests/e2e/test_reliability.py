"""The reliability rules (README, Reliability), with the real registry and the real broker."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aio_pika
import httpx
import pytest

from shared.topology import COMMANDS
from tests.conftest import auth
from tests.e2e.helpers import eventually
from tests.e2e.test_events_and_commands import request_over_amqp
from tests.e2e.test_sources_api import assert_sms_error, count_named, register, server
from tests.support import broker
from tests.support.integrator import event_tap
from tests.support.processes import System


async def publish_raw(
    amqp_url: str, routing_key: str, body: bytes, *, message_id: str, headers: dict[str, object]
) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(COMMANDS)
        await exchange.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                headers=headers,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )


async def dead_letters(
    amqp_url: str, timeout: float = 20
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Drains the registry's dead-letter queue, waiting up to `timeout` for the first one."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue("rehost.registry.dlq")
        found: list[aio_pika.abc.AbstractIncomingMessage] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = await queue.get(fail=False)
            if message is None:
                if found:
                    return found
                await asyncio.sleep(0.2)
                continue
            await message.ack()
            found.append(message)
        return found


async def test_the_same_message_twice_changes_nothing_the_second_time(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    body = json.dumps(server()).encode()
    message_id = uuid.uuid4().hex
    async with event_tap(amqp_url, "source.*") as tap:
        first = await request_over_amqp(
            amqp_url, "sms.source.register", body, "domain-a", message_id
        )
        again = await request_over_amqp(
            amqp_url, "sms.source.register", body, "domain-a", message_id
        )
        assert first == again
        server_id = first["body"]["id"]  # type: ignore[index]
        await tap.wait_for(1, server_id)
        await tap.settle()
    assert len(tap.of(server_id)) == 1
    shown = (await client.get(f"/v3/sources/{server_id}", headers=auth())).json()
    assert shown["version"] == 1


async def test_malformed_and_unknown_messages_are_dead_lettered_with_a_reason(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    headers: dict[str, object] = {"domain_id": "domain-a"}
    await publish_raw(
        amqp_url, "sms.source.register", b"{not json", message_id="bad-json", headers=headers
    )
    await publish_raw(amqp_url, "sms.source.nonsense", b"{}", message_id="bad-key", headers=headers)
    await publish_raw(
        amqp_url,
        "sms.source.register",
        b"{}",
        message_id="bad-version",
        headers={**headers, "schema_version": 99},
    )
    await publish_raw(
        amqp_url,
        "sms.source.register",
        b'{"name": "' + b"x" * 5_000_000 + b'"}',
        message_id="oversized",
        headers=headers,
    )
    found = {m.message_id: m for m in await dead_letters(amqp_url)}
    while len(found) < 4:
        more = await dead_letters(amqp_url, timeout=5)
        if not more:
            break
        found.update({m.message_id: m for m in more})
    assert set(found) >= {"bad-json", "bad-key", "bad-version", "oversized"}
    assert "oversized" in found["oversized"].headers["x-rehost-reason"]
    assert "malformed" in found["bad-json"].headers["x-rehost-reason"]
    assert "unknown routing key" in found["bad-key"].headers["x-rehost-reason"]
    assert "schema_version" in found["bad-version"].headers["x-rehost-reason"]
    assert found["bad-json"].body == b"{not json"
    # …and the service keeps serving.
    await register(client, server())


async def test_a_message_that_always_fails_ends_in_the_dead_letter_queue(
    client: httpx.AsyncClient, amqp_url: str, base_env: dict[str, str]
) -> None:
    db = Path(base_env["REHOST_DATA_DIR"]) / "registry.db"
    poison = f"poison-{uuid.uuid4().hex[:6]}"
    with sqlite3.connect(db) as conn:  # the store refuses this one server, every time
        conn.execute(
            f"CREATE TRIGGER refuse_poison BEFORE INSERT ON sources "
            f"WHEN json_extract(NEW.data, '$.name') = '{poison}' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    try:
        await publish_raw(
            amqp_url,
            "sms.source.register",
            json.dumps(server(poison)).encode(),
            message_id="always-fails",
            headers={"domain_id": "domain-a"},
        )
        await asyncio.sleep(0.5)
        await register(client, server())  # others are served meanwhile
        found = await dead_letters(amqp_url, timeout=60)
    finally:
        with sqlite3.connect(db) as conn:
            conn.execute("DROP TRIGGER refuse_poison")
    assert [m.message_id for m in found] == ["always-fails"]
    death = found[0].headers["x-death"][0]
    assert death["reason"] == "delivery_limit"
    assert death["queue"] == "rehost.registry"
    assert await count_named(client, poison) == 0


async def test_registry_down_gives_503_quickly_and_a_retry_succeeds_once(
    client: httpx.AsyncClient, system: System
) -> None:
    body = server()
    system["registry"].stop()
    try:
        started = time.monotonic()
        response = await client.post("/v3/sources", json=body, headers=auth())
        elapsed = time.monotonic() - started
        assert_sms_error(response, 503, "SMS.9503")
        assert elapsed < 3 + 1.5  # the reply timeout, not a hang
    finally:
        system["registry"].start()
    server_id = await register(client, body)  # the client's retry
    assert await count_named(client, body["name"]) == 1
    assert (await client.get(f"/v3/sources/{server_id}", headers=auth())).status_code == 200


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
async def test_restarting_the_registry_loses_nothing_acknowledged(
    client: httpx.AsyncClient, amqp_url: str, system: System, how: str
) -> None:
    domain = f"domain-restart-{uuid.uuid4().hex[:6]}"
    bodies = [server(f"r-{i}-{uuid.uuid4().hex[:6]}") for i in range(150)]
    async with event_tap(amqp_url, "source.registered") as tap:
        for body in bodies:  # queued straight onto the broker: acknowledged by it
            await publish_raw(
                amqp_url,
                "sms.source.register",
                json.dumps(body).encode(),
                message_id=uuid.uuid4().hex,
                headers={"domain_id": domain},
            )
        await asyncio.sleep(0.3)
        if how == "SIGKILL":
            system["registry"].kill()
        else:
            system["registry"].stop()
        system["registry"].start()
        await tap.wait_for(150, timeout=60)
        await tap.settle()
    listed = await client.get("/v3/sources", params={"limit": 100}, headers=auth(domain))
    assert listed.json()["count"] == 150
    registered = {e.body["aggregate_id"] for e in tap.received if e.body["domain_id"] == domain}
    assert len(registered) == 150  # every server's event at least once; ids dedupe the rest


async def test_a_dead_letter_is_replayed_after_a_fix_with_the_documented_command(
    client: httpx.AsyncClient, amqp_url: str, base_env: dict[str, str]
) -> None:
    db = Path(base_env["REHOST_DATA_DIR"]) / "registry.db"
    name = f"fixable-{uuid.uuid4().hex[:6]}"
    with sqlite3.connect(db) as conn:  # the cause: the store refuses this server
        conn.execute(
            f"CREATE TRIGGER refuse_fixable BEFORE INSERT ON sources "
            f"WHEN json_extract(NEW.data, '$.name') = '{name}' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
    try:
        await publish_raw(
            amqp_url,
            "sms.source.register",
            json.dumps(server(name)).encode(),
            message_id=f"replay-{name}",
            headers={"domain_id": "domain-a"},
        )
        await eventually(lambda: _dead_letter_count(amqp_url), timeout=60)
    finally:
        with sqlite3.connect(db) as conn:  # the fix
            conn.execute("DROP TRIGGER refuse_fixable")
    env = {**os.environ, "REHOST_AMQP_URL": amqp_url}
    command = [sys.executable, "-m", "services.cli", "dlq", "replay", "registry"]
    listed = await asyncio.to_thread(
        subprocess.run, [*command, "--dry-run"], env=env, capture_output=True, text=True, check=True
    )
    assert f"replay-{name} sms.source.register delivery_limit" in listed.stdout
    replayed = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, check=True
    )
    assert "replayed 1 message(s)" in replayed.stdout
    await eventually(lambda: _named(client, name), timeout=20)
    assert await _dead_letter_count(amqp_url) == 0


async def _dead_letter_count(amqp_url: str) -> int:
    return (await broker.declared(amqp_url, "rehost.registry.dlq"))[0]


async def _named(client: httpx.AsyncClient, name: str) -> bool:
    return await count_named(client, name) == 1

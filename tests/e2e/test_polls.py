"""Agents' polls answered from the gateway's read model, over the real broker: what is
queued reaches the agent, what is answered is not handed out again, other tenants and
deleted servers get 404, and a lost event queue never leaves the model stale."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator

import aio_pika
import httpx
import pytest

from tests.conftest import auth
from tests.e2e.helpers import act, assert_sms_error, create_task, eventually, ok, register, report
from tests.e2e.test_events_and_commands import request_over_amqp
from tests.support import broker
from tests.support.processes import System


async def next_command(client: httpx.AsyncClient, server_id: str, domain: str = "domain-a") -> str:
    answer = await ok(client.get(f"/v3/sources/{server_id}/command", headers=auth(domain)))
    return str(answer["command_name"])


async def started(client: httpx.AsyncClient) -> tuple[str, str]:
    """A server whose task was started, its START seen by a poll (so the model holds it)."""
    server_id = await register(client)
    assert await next_command(client, server_id) == ""
    task_id = await create_task(client, server_id)
    assert (await act(client, task_id, "start")).status_code == 200
    await eventually(lambda: command_is(client, server_id, "START"), timeout=5)
    return server_id, task_id


async def command_is(client: httpx.AsyncClient, server_id: str, name: str) -> bool:
    return await next_command(client, server_id) == name


async def assert_start_never_comes_back(client: httpx.AsyncClient, servers: list[str]) -> None:
    """Each server's START answered 200, then polled five times: no poll is handed it."""

    async def answer_then_poll(server_id: str) -> list[str]:
        response = await report(client, server_id, "START")
        assert response.status_code == 200
        return [await next_command(client, server_id) for _ in range(5)]

    seen = await asyncio.gather(*(answer_then_poll(s) for s in servers))
    assert all("START" not in polls for polls in seen), seen


@pytest.fixture
def late_settle(system: System) -> Iterator[None]:
    """command-result settles each result a second late (the `settle` failpoint): every poll
    right after a result's 200 meets the command still at the head of its channel, so only
    the gateway's hold keeps it from the agent."""
    system["command-result"].stop()
    late = system.add(
        "command-result",
        "REHOST_COMMAND_RESULT_HEALTH_PORT",
        extra={"REHOST_FAILPOINTS": "settle"},
        name="command-result-late",
    )
    try:
        late.start()
        yield
    finally:
        system.discard("command-result-late")
        system["command-result"].start()


@pytest.mark.usefixtures("late_settle")
async def test_a_queued_command_reaches_the_agent_and_an_answered_one_never_comes_back(
    client: httpx.AsyncClient,
) -> None:
    servers = [(await started(client))[0] for _ in range(10)]
    await assert_start_never_comes_back(client, servers)


@pytest.mark.usefixtures("late_settle")
async def test_a_command_answered_before_this_process_polled_it_never_comes_back(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    """The first poll after the 200 asks command-result, which has not taken the command
    off the queue yet: what it says is held like the model's own entry."""

    async def started_unpolled() -> str:
        server_id = await register(client)
        task_id = await create_task(client, server_id)
        assert (await act(client, task_id, "start")).status_code == 200
        # START is queued a hop after the start's 200; asked of command-result directly,
        # so that this gateway still has never polled the server.
        await eventually(lambda: _queued_at_owner(amqp_url, server_id, "START"), timeout=5)
        return server_id

    servers = await asyncio.gather(*(started_unpolled() for _ in range(20)))
    await assert_start_never_comes_back(client, servers)


async def _queued_at_owner(amqp_url: str, server_id: str, name: str) -> bool:
    """Whether command-result's channel for the server has `name` at its head."""
    body = json.dumps({"server_ids": [server_id]}).encode()
    reply = await request_over_amqp(amqp_url, "sms.command.next_many", body, "domain-a")
    answer = reply["body"]
    assert isinstance(answer, dict), reply
    return any(c["next"]["command_name"] == name for c in answer["commands"])


async def test_a_change_told_only_by_events_reaches_the_poll(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    """A result an integrator publishes straight to the broker never passes the gateway:
    the poll learns of it from `command.completed` alone, within moments."""
    server_id, _ = await started(client)
    body = {"server_id": server_id, "command_name": "START", "result": "success"}
    body["result_detail"] = {"msg": "ok"}  # type: ignore[assignment]
    published = time.monotonic()
    reply = await request_over_amqp(
        amqp_url, "sms.source.report_result", json.dumps(body).encode(), "domain-a"
    )
    assert reply["status"] == 200
    await eventually(lambda: command_is(client, server_id, ""), timeout=3)
    assert time.monotonic() - published < 3


async def test_another_tenant_and_a_deleted_server_get_404(client: httpx.AsyncClient) -> None:
    server_id = await register(client)
    assert await next_command(client, server_id) == ""  # now in the model
    response = await client.get(f"/v3/sources/{server_id}/command", headers=auth("domain-b"))
    assert_sms_error(response, 404, "SMS.2001")
    deleted = await client.delete(f"/v3/sources/{server_id}", headers=auth())
    assert deleted.status_code == 200
    response = await client.get(f"/v3/sources/{server_id}/command", headers=auth())
    assert_sms_error(response, 404, "SMS.2001")
    unknown = await client.get(f"/v3/sources/{uuid.uuid4().hex}/command", headers=auth())
    assert_sms_error(unknown, 404, "SMS.2001")


async def _feed_queues(amqp_url: str) -> list[str]:
    """The gateway processes' event queues that are consumed (a gateway another test
    stopped leaves its queue until it expires). The broker counts a queue's consumers in
    its statistics, emitted every 5 s (`collect_statistics_interval`): a queue consumed a
    moment ago may still be listed with none, so callers wait for what they expect."""
    listed = await asyncio.to_thread(
        broker.rabbitmqctl, "list_queues", "-p", broker.vhost_of(amqp_url), "name", "consumers"
    )
    rows = [line.split() for line in listed.splitlines()]
    return [row[0] for row in rows if row[0].startswith("rehost.gateway.") and row[1] != "0"]


async def _consumed_again(amqp_url: str, queue: str) -> bool:
    return await _feed_queues(amqp_url) == [queue]


async def test_a_deleted_event_queue_resets_the_model_instead_of_leaving_it_stale(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    """The broker loses the gateway's queue (here: deleted by hand) and with it any event
    it held. The gateway declares a new one and forgets what it knew, so a result told only
    by an event published meanwhile is still seen by the next polls."""
    server_id, _ = await started(client)
    [queue] = await eventually(lambda: _feed_queues(amqp_url), timeout=15)
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        # Told while the queue is gone: this event is lost for the gateway.
        body = {"server_id": server_id, "command_name": "START", "result": "success"}
        body["result_detail"] = {"msg": "ok"}  # type: ignore[assignment]
        await request_over_amqp(
            amqp_url, "sms.source.report_result", json.dumps(body).encode(), "domain-a"
        )
    await eventually(lambda: command_is(client, server_id, ""), timeout=5)
    # Declared again, consumed again.
    assert await eventually(lambda: _consumed_again(amqp_url, queue), timeout=15)
    ready = await client.get("/readyz")
    assert ready.status_code == 200

"""A migration driven only through the HTTP API: register, task, commands, results, cutover."""

from __future__ import annotations

import httpx

from shared.contracts.catalog import EVENTS
from shared.envelope import Event
from tests.conftest import auth
from tests.e2e.helpers import act, create_task, eventually, ok, register, report, source, task
from tests.e2e.test_command_results import history
from tests.support.integrator import event_tap


async def next_command(client: httpx.AsyncClient, server_id: str) -> dict[str, object]:
    result: dict[str, object] = await ok(
        client.get(f"/v3/sources/{server_id}/command", headers=auth())
    )
    return result


async def test_happy_path_from_registration_to_finished(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    async with (
        event_tap(amqp_url, "#") as everything,
        event_tap(amqp_url, "source.state_changed") as tap,
    ):
        server_id = await register(client)
        assert (await next_command(client, server_id))["command_name"] == ""
        task_id = await create_task(client, server_id)

        assert (await act(client, task_id, "start")).status_code == 200
        command = await eventually(lambda: _command_named(client, server_id, "START"), timeout=10)
        assert command["command_param"]["task_id"] == task_id
        # A lost agent that asks again gets the same command.
        assert (await next_command(client, server_id))["command_name"] == "START"

        assert (await report(client, server_id, "START")).status_code == 200
        assert (await next_command(client, server_id))["command_name"] == ""
        assert (await report(client, server_id, "SYNC")).status_code == 200
        await eventually(lambda: _task_in(client, task_id, "SYNCING"))

        assert (await act(client, task_id, "cutover")).status_code == 200
        await eventually(lambda: _command_named(client, server_id, "SYNC"))
        assert (await report(client, server_id, "SYNC")).status_code == 200

        await eventually(lambda: _task_in(client, task_id, "MIGRATE_SUCCESS"))
        await tap.wait_for(5, server_id)
        await tap.settle()

    shown = await source(client, server_id)
    assert (shown["state"], shown["migration_cycle"]) == ("finished", "cutovered")
    # Every event of the migration is its envelope around the body the catalog publishes.
    kinds = set()
    for received in everything.received:
        if received.message.routing_key.startswith("agent."):
            continue  # agents' reports are bodies without the event envelope
        event = Event.model_validate(received.body)
        EVENTS[event.type].model_validate(event.data)
        kinds.add(event.type)
    assert {
        "source.registered",
        "task.created",
        "task.target_locked",
        "command.queued",
        "command.result_recorded",
        "task.state_changed",
        "task.target_unlocked",
    } <= kinds
    events = tap.of(server_id)
    assert [(e["data"]["from"], e["data"]["to"]) for e in events] == [
        ("waiting", "initialize"),
        ("initialize", "replicate"),
        ("replicate", "syncing"),
        ("syncing", "cutovering"),
        ("cutovering", "finished"),
    ]
    versions = [e["aggregate_version"] for e in events]
    assert versions == sorted(set(versions))
    assert [e["data"]["version"] for e in events] == versions
    finished = await task(client, task_id)
    assert finished["lock"]["held"] is False

    # A result is recorded a hop after its 200: the last may still be on its way.
    results = await history(client, server_id, count=3)
    assert [r["command_name"] for r in results] == ["SYNC", "SYNC", "START"]
    assert all(r["accepted"] and r["trace_id"] for r in results)


async def _command_named(client: httpx.AsyncClient, server_id: str, name: str) -> dict | None:  # type: ignore[type-arg]
    command = await next_command(client, server_id)
    return command if command["command_name"] == name else None


async def _task_in(client: httpx.AsyncClient, task_id: str, state: str) -> bool:
    return (await task(client, task_id))["state"] == state

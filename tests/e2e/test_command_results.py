"""Agent commands and command results over the real broker (issue: command results)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import auth
from tests.e2e.helpers import (
    act,
    assert_sms_error,
    create_task,
    eventually,
    ok,
    register,
    report,
    source,
)
from tests.e2e.test_events_and_commands import request_over_amqp
from tests.support.integrator import event_tap

EXAMPLE = (Path(__file__).parents[1] / "fixtures" / "sms-command-result-example.json").read_bytes()


async def started_server(client: httpx.AsyncClient) -> str:
    """A registered server whose task was started: its state is `initialize`."""
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    assert (await act(client, task_id, "start")).status_code == 200
    return server_id


async def history(
    client: httpx.AsyncClient, server_id: str, domain: str = "domain-a", *, count: int = 1
) -> list[dict]:  # type: ignore[type-arg]
    """The server's recorded results, once there are at least `count`: a result is recorded
    a hop after its 200 (the registry answers it, then tells command-result)."""

    async def recorded() -> list[dict] | None:  # type: ignore[type-arg]
        path = f"/v3/sources/{server_id}/command_results"
        listed = await ok(client.get(path, headers=auth(domain)))
        entries = list(listed["command_results"])
        return entries if len(entries) >= count else None

    return await eventually(recorded) if count else await recorded() or []


async def test_the_seed_example_moves_the_server_and_emits_the_event(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    server_id = await started_server(client)
    async with event_tap(amqp_url, "source.state_changed") as tap:
        response = await client.post(
            f"/v3/sources/{server_id}/command_result",
            content=EXAMPLE,
            headers={**auth(), "Content-Type": "application/json"},
        )
        assert response.status_code == 200 and response.json() == {}
        [event] = await tap.wait_for(1, server_id)
    assert event["data"]["from"] == "initialize" and event["data"]["to"] == "replicate"
    assert event["data"]["migration_cycle"] == "replicating"
    assert event["data"]["cause"] == {
        "kind": "command_result",
        "command_name": "START",
        "result": "success",
    }
    assert (await source(client, server_id))["state"] == "replicate"
    [entry] = await history(client, server_id)
    assert entry["result_detail"] == {"msg": "xxx"} and entry["received_at"] and entry["trace_id"]


async def test_result_detail_as_a_json_string_like_the_sdk_samples(
    client: httpx.AsyncClient,
) -> None:
    server_id = await started_server(client)
    response = await report(client, server_id, "START", detail='{"msg":"xxx"}')
    assert response.status_code == 200
    assert (await history(client, server_id))[0]["result_detail"] == {"msg": "xxx"}


async def test_a_failed_command_moves_to_error_with_the_reason(client: httpx.AsyncClient) -> None:
    server_id = await started_server(client)
    assert (
        await report(client, server_id, "START", "fail", {"error": "disk full"})
    ).status_code == 200
    shown = await source(client, server_id)
    assert shown["state"] == "error"
    assert "disk full" in shown["error"]["reason"] and shown["error"]["command_name"] == "START"


async def test_a_transition_the_table_refuses_is_recorded_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    server_id = await register(client)  # waiting: a START result makes no sense yet
    before = await source(client, server_id)
    answered = await report(client, server_id, "START")  # a fact: recorded, answered 200
    assert (answered.status_code, answered.json()) == (200, {})
    after = await source(client, server_id)
    assert (after["state"], after["version"]) == (before["state"], before["version"])
    [entry] = await history(client, server_id)
    assert entry["accepted"] is False and "waiting" in entry["refusal"]


async def test_concurrent_out_of_order_results_lose_nothing_and_never_double_an_event(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    server_id = await started_server(client)
    results = ["START"] * 6 + ["SYNC"] * 6
    async with event_tap(amqp_url, "source.state_changed") as tap:
        responses = await asyncio.gather(*(report(client, server_id, c) for c in results))
        await tap.settle()
    assert {r.status_code for r in responses} == {200}  # every report is a fact
    events = tap.of(server_id)
    # START is accepted exactly once (initialize → replicate); the SYNCs that come after it
    # are accepted (replicate → syncing, then syncing → syncing, which changes nothing).
    assert [(e["data"]["from"], e["data"]["to"]) for e in events][:1] == [
        ("initialize", "replicate")
    ]
    assert len([e for e in events if e["data"]["cause"]["command_name"] == "START"]) == 1
    assert len(events) == len({e["data"]["to"] for e in events}) <= 2
    versions = [e["aggregate_version"] for e in events]
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    recorded = await history(client, server_id, count=len(results))
    assert len(recorded) == len(results)
    assert any(entry["accepted"] for entry in recorded)
    shown = await source(client, server_id)
    assert shown["version"] == versions[-1]


async def test_the_same_result_message_twice_makes_one_entry_and_one_transition(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    server_id = await started_server(client)
    body = json.dumps(
        {"server_id": server_id, "command_name": "START", "result": "success", "result_detail": {}}
    ).encode()
    message_id = uuid.uuid4().hex
    async with event_tap(amqp_url, "source.state_changed") as tap:
        first = await request_over_amqp(
            amqp_url, "sms.source.report_result", body, "domain-a", message_id
        )
        again = await request_over_amqp(
            amqp_url, "sms.source.report_result", body, "domain-a", message_id
        )
        await tap.wait_for(1, server_id)
        await tap.settle()
    assert first == again == {"status": 200, "body": {}}
    assert len(tap.of(server_id)) == 1
    assert len(await history(client, server_id)) == 1


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"command_name": "REBOOT", "result": "success", "result_detail": {}}, "command_name"),
        ({"command_name": "START", "result": "ok", "result_detail": {}}, "result"),
        ({"command_name": "S" * 256, "result": "success", "result_detail": {}}, "command_name"),
        ({"command_name": "START", "result": "success", "result_detail": 42}, "result_detail"),
        (
            {"command_name": "START", "result": "success", "result_detail": "not json"},
            "result_detail",
        ),
        (
            {"command_name": "START", "result": "success", "result_detail": "[1, 2]"},
            "result_detail",
        ),
        ({"command_name": "START", "result": "success", "result_detail": ["x"]}, "result_detail"),
        (
            {"command_name": "START", "result": "success", "result_detail": {"log": "x" * 70_000}},
            "result_detail",
        ),
        ({"command_name": "START", "result": "success"}, "result_detail"),
    ],
)
async def test_bad_input_is_400_and_stores_nothing(
    client: httpx.AsyncClient, body: dict[str, object], named: str
) -> None:
    server_id = await started_server(client)
    response = await client.post(
        f"/v3/sources/{server_id}/command_result", json=body, headers=auth()
    )
    assert named in assert_sms_error(response, 400, "SMS.1001")["error_msg"]
    assert await history(client, server_id, count=0) == []
    assert (await source(client, server_id))["state"] == "initialize"


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    server_id = await register(client)
    response = await client.post(
        f"/v3/sources/{server_id}/command_result",
        content=b"{command_name",
        headers={**auth(), "Content-Type": "application/json"},
    )
    assert_sms_error(response, 400, "SMS.1002")


async def test_another_domains_server_is_404_and_permission_is_checked(
    client: httpx.AsyncClient,
) -> None:
    server_id = await started_server(client)
    other = await report(client, server_id, "START", domain="domain-b")
    assert_sms_error(other, 404, "SMS.2001")
    hidden = await client.get(f"/v3/sources/{server_id}/command", headers=auth("domain-b"))
    assert_sms_error(hidden, 404, "SMS.2001")
    unknown = await client.get("/v3/sources/nope/command", headers=auth())
    assert_sms_error(unknown, 404, "SMS.2001")
    denied = await client.post(
        f"/v3/sources/{server_id}/command_result",
        json={"command_name": "START", "result": "success", "result_detail": {}},
        headers=auth(actions=["sms:server:migrationServer"]),
    )
    body = assert_sms_error(denied, 403, "SMS.9004")
    assert "sms:server:updateCommandResult" in body["error_msg"]
    assert await history(client, server_id, count=0) == []
    too_long = await report(client, "x" * 37, "START")
    assert_sms_error(too_long, 400, "SMS.1001")


async def test_commands_are_delivered_in_order_and_stay_until_answered(
    client: httpx.AsyncClient,
) -> None:
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    assert (await act(client, task_id, "start")).status_code == 200
    assert (await report(client, server_id, "START")).status_code == 200
    assert (await report(client, server_id, "SYNC")).status_code == 200
    await eventually(lambda: _state(client, task_id, "SYNCING"))
    assert (await act(client, task_id, "test")).status_code == 200
    assert (await act(client, task_id, "stop")).status_code == 200  # queued behind the SYNC

    async def head() -> str:
        reply = await ok(client.get(f"/v3/sources/{server_id}/command", headers=auth()))
        return str(reply["command_name"])

    async def head_is(name: str) -> bool:
        return await head() == name

    # A poll is answered from the gateway's read model, which the channel's events reach
    # a moment after the answers that caused them: wait for the head, not for any answer.
    assert await eventually(lambda: head_is("SYNC"))
    assert await head() == "SYNC"
    assert (await report(client, server_id, "UPLOAD_LOG")).status_code == 200  # not the head
    assert await head() == "SYNC"
    # The server was stopped meanwhile, so the late SYNC result is refused — and still settles.
    await report(client, server_id, "SYNC")
    assert await eventually(lambda: head_is("STOP"))


async def _state(client: httpx.AsyncClient, task_id: str, state: str) -> bool:
    return (await ok(client.get(f"/v3/tasks/{task_id}", headers=auth())))["state"] == state

"""Migration tasks and target-server locks over the real broker (issue: tasks and locks)."""

from __future__ import annotations

import asyncio
import uuid

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
    server_body,
    task,
    task_body,
)
from tests.support import broker
from tests.support.integrator import event_tap
from tests.support.processes import System


async def tasks_on_one_target(client: httpx.AsyncClient, count: int, vm_id: str) -> list[str]:
    servers = await asyncio.gather(*(register(client) for _ in range(count)))
    return list(await asyncio.gather(*(create_task(client, s, vm_id) for s in servers)))


async def start_all_at_once(client: httpx.AsyncClient, task_ids: list[str]) -> list[httpx.Response]:
    return list(await asyncio.gather(*(act(client, t, "start") for t in task_ids)))


def exactly_one_holder(responses: list[httpx.Response], task_ids: list[str]) -> str:
    winners = [t for t, r in zip(task_ids, responses, strict=True) if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses if r.status_code != 409]
    for response in responses:
        if response.status_code != 200:
            body = assert_sms_error(response, 409, "SMS.3002")
            assert winners[0] in body["error_msg"]
    return winners[0]


async def test_fifty_concurrent_starts_on_one_target_one_wins(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    vm_id = f"vm-{uuid.uuid4().hex[:8]}"
    task_ids = await tasks_on_one_target(client, 50, vm_id)
    async with event_tap(amqp_url, "task.*") as tap:
        holder = exactly_one_holder(await start_all_at_once(client, task_ids), task_ids)
        await tap.wait_for(1)
        await tap.settle()
    locked = [e for e in (r.body for r in tap.received) if e["type"] == "task.target_locked"]
    assert [e["data"]["task_id"] for e in locked if e["data"]["vm_id"] == vm_id] == [holder]
    states = await asyncio.gather(*(task(client, t) for t in task_ids))
    assert [s["id"] for s in states if s["state"] == "RUNNING"] == [holder]
    assert all(s["state"] == "READY" for s in states if s["id"] != holder)


async def test_fifty_concurrent_starts_over_two_task_lock_instances(
    client: httpx.AsyncClient, system: System, amqp_url: str
) -> None:
    second = system.add("task-lock", "REHOST_TASK_LOCK_HEALTH_PORT", name="task-lock-2")
    second.start()
    try:
        # Ready means consuming: whoever waited for it may count on the second consumer.
        assert (await client.get(second.ready_url)).json()["consuming"] is True
        assert await consumers_of(amqp_url, "rehost.task-lock") == 2
        vm_id = f"vm-{uuid.uuid4().hex[:8]}"
        task_ids = await tasks_on_one_target(client, 50, vm_id)
        exactly_one_holder(await start_all_at_once(client, task_ids), task_ids)
    finally:
        system.discard("task-lock-2")


async def test_unlock_then_another_task_starts_with_a_greater_fencing_token(
    client: httpx.AsyncClient, amqp_url: str
) -> None:
    vm_id = f"vm-{uuid.uuid4().hex[:8]}"
    first, second = await tasks_on_one_target(client, 2, vm_id)
    await ok(act(client, first, "start"))
    assert_sms_error(await act(client, second, "start"), 409, "SMS.3002")
    first_token = (await task(client, first))["lock"]["fencing_token"]

    async with event_tap(amqp_url, "task.target_unlocked") as tap:
        assert await ok(client.post(f"/v3/tasks/{first}/unlock", headers=auth())) == {}
        [unlocked] = await tap.wait_for(1)
        assert await ok(client.post(f"/v3/tasks/{first}/unlock", headers=auth())) == {}
        await tap.settle()
    assert len(tap.received) == 1  # the second unlock changed nothing
    assert unlocked["data"] == {
        "task_id": first,
        "vm_id": vm_id,
        "fencing_token": first_token,
        "reason": "explicit_unlock",
    }

    await ok(act(client, second, "start"))
    assert (await task(client, second))["lock"]["fencing_token"] > first_token
    # The first task lost its lock: its further actions are refused.
    assert_sms_error(await act(client, first, "stop"), 409, "SMS.3005")


async def test_unlock_errors(client: httpx.AsyncClient) -> None:
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    assert_sms_error(await client.post("/v3/tasks/nope/unlock", headers=auth()), 404, "SMS.3001")
    other = await client.post(f"/v3/tasks/{task_id}/unlock", headers=auth("domain-b"))
    assert_sms_error(other, 404, "SMS.3001")
    denied = await client.post(f"/v3/tasks/{task_id}/unlock", headers=auth(actions=["sms:task:*"]))
    body = assert_sms_error(denied, 403, "SMS.9004")
    assert {"encoded_authorization_message", "error_param", "details"} <= set(body)
    assert "sms:server:unlock" in body["error_msg"]


async def test_a_finished_or_stopped_task_releases_its_lock_by_itself(
    client: httpx.AsyncClient,
) -> None:
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    await ok(act(client, task_id, "start"))
    await ok(report(client, server_id, "START"))
    await ok(report(client, server_id, "SYNC"))
    await eventually(lambda: _state(client, task_id, "SYNCING"))
    await ok(act(client, task_id, "stop"))
    await ok(report(client, server_id, "STOP"))
    shown = await eventually(lambda: _state(client, task_id, "ABORT"))
    assert shown["lock"]["held"] is False
    await ok(act(client, task_id, "restart"))  # and it can take it again
    assert (await task(client, task_id))["lock"]["held"] is True
    await ok(report(client, server_id, "START", "fail", {"error": "boom"}))
    failed = await eventually(lambda: _state(client, task_id, "MIGRATE_FAIL"))
    assert failed["lock"]["held"] is False


async def test_a_source_with_a_task_cannot_be_deleted_until_the_task_is(
    client: httpx.AsyncClient,
) -> None:
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    refused = await client.delete(f"/v3/sources/{server_id}", headers=auth())
    assert task_id in assert_sms_error(refused, 409, "SMS.2004")["error_msg"]
    await ok(act(client, task_id, "start"))
    assert_sms_error(await client.delete(f"/v3/tasks/{task_id}", headers=auth()), 409, "SMS.3003")
    await ok(act(client, task_id, "stop"))
    await ok(report(client, server_id, "STOP"))
    await eventually(lambda: _state(client, task_id, "ABORT"))
    assert (await client.delete(f"/v3/tasks/{task_id}", headers=auth())).status_code == 200
    assert_sms_error(await client.get(f"/v3/tasks/{task_id}", headers=auth()), 404, "SMS.3001")
    assert (await client.delete(f"/v3/sources/{server_id}", headers=auth())).status_code == 200


async def test_a_second_task_for_the_same_source_is_refused(client: httpx.AsyncClient) -> None:
    server_id = await register(client)
    first = await create_task(client, server_id)
    response = await client.post("/v3/tasks", json=task_body(server_id), headers=auth())
    assert first in assert_sms_error(response, 409, "SMS.2004")["error_msg"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"name": "n" * 256}, "name"),
        ({"type": "MIGRATE_TAPE"}, "type"),
        ({"os_type": "BEOS"}, "os_type"),
        ({"migration_ip": ""}, "migration_ip"),
        ({"target_server": {"name": "t"}}, "target_server.vm_id"),
        ({"target_server": {"vm_id": "v" * 256, "name": "t"}}, "target_server.vm_id"),
        ({"source_server": {}}, "source_server.id"),
        ({"speed_limit": -1}, "speed_limit"),
    ],
)
async def test_bad_task_bodies_are_400_and_create_nothing(
    client: httpx.AsyncClient, change: dict[str, object], named: str
) -> None:
    server_id = await register(client)
    response = await client.post(
        "/v3/tasks", json={**task_body(server_id), **change}, headers=auth()
    )
    assert named in assert_sms_error(response, 400, "SMS.1001")["error_msg"]
    listed = await ok(
        client.get("/v3/tasks", params={"source_server_id": server_id}, headers=auth())
    )
    assert listed["count"] == 0


async def test_a_task_for_a_missing_source_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v3/tasks", json=task_body("no-such-server"), headers=auth())
    assert_sms_error(response, 404, "SMS.2001")
    other_domain = await register(client, domain="domain-b")
    response = await client.post("/v3/tasks", json=task_body(other_domain), headers=auth())
    assert_sms_error(response, 404, "SMS.2001")


@pytest.mark.parametrize(
    "operation", ["clone_test", "network_check", "skip", "clear", "migration_test"]
)
async def test_unsupported_operations_are_refused_clearly(
    client: httpx.AsyncClient, operation: str
) -> None:
    task_id = await create_task(client, await register(client))
    error = assert_sms_error(await act(client, task_id, operation), 400, "SMS.3004")
    assert operation in error["error_msg"]
    assert (await task(client, task_id))["state"] == "READY"


async def test_unknown_and_ill_timed_operations(client: httpx.AsyncClient) -> None:
    task_id = await create_task(client, await register(client))
    assert_sms_error(await act(client, task_id, "explode"), 400, "SMS.1001")
    assert_sms_error(await act(client, task_id, "cutover"), 409, "SMS.3003")
    assert_sms_error(await act(client, "nope", "start"), 404, "SMS.3001")
    assert_sms_error(await act(client, task_id, "start", domain="domain-b"), 404, "SMS.3001")
    shown = await task(client, task_id)
    assert (shown["state"], shown["lock"]["held"]) == ("READY", False)


async def test_task_reads(client: httpx.AsyncClient) -> None:
    server_id = await register(client)
    body = task_body(server_id, region_id="cn-north-7", project_id="p1")
    task_id = (await ok(client.post("/v3/tasks", json=body, headers=auth())))["id"]
    shown = await task(client, task_id)
    assert shown["target_server"]["vm_id"] == body["target_server"]["vm_id"]
    assert (shown["region_id"], shown["project_id"], shown["state"]) == (
        "cn-north-7",
        "p1",
        "READY",
    )
    listed = await ok(
        client.get("/v3/tasks", params={"state": "READY", "limit": 100}, headers=auth())
    )
    assert task_id in [t["id"] for t in listed["tasks"]]
    other = await ok(client.get("/v3/tasks", headers=auth("domain-b")))
    assert task_id not in [t["id"] for t in other["tasks"]]


async def _state(client: httpx.AsyncClient, task_id: str, state: str) -> dict | None:  # type: ignore[type-arg]
    shown = await task(client, task_id)
    return shown if shown["state"] == state else None


async def consumers_of(amqp_url: str, queue: str) -> int:
    return (await broker.declared(amqp_url, queue))[1]


@pytest.mark.parametrize("crash_at", ["lock_taken", "source_moved", "task_written"])
async def test_a_crash_between_the_steps_of_start_is_finished_by_the_restart(
    client: httpx.AsyncClient, system: System, amqp_url: str, crash_at: str
) -> None:
    server_id = await register(client)
    task_id = await create_task(client, server_id)
    system["task-lock"].stop()
    doomed = system.add(
        "task-lock",
        "REHOST_TASK_LOCK_HEALTH_PORT",
        extra={"REHOST_FAILPOINTS": crash_at},
        name=f"task-lock-{crash_at}",
    )
    doomed.start()
    async with event_tap(amqp_url, "#") as tap:
        try:
            response = await act(client, task_id, "start")
            assert_sms_error(response, 503, "SMS.9503")  # it died before replying
            assert doomed.popen is not None and doomed.popen.wait(10) == 137
        finally:
            system["task-lock"].start()
            system.discard(f"task-lock-{crash_at}")
        shown = await eventually(lambda: _state(client, task_id, "RUNNING"), timeout=20)
        await eventually(lambda: _head_is(client, server_id, "START"))
        await tap.settle()

    assert shown["lock"]["held"] is True and shown["lock"]["fencing_token"] >= 1
    mine = [r.body for r in tap.received if task_id in str(r.body.get("data"))]
    kinds = {e["type"] for e in mine}
    assert {"task.target_locked", "task.state_changed", "command.queued"} <= kinds
    assert len({e["event_id"] for e in mine if e["type"] == "task.target_locked"}) == 1
    source = await ok(client.get(f"/v3/sources/{server_id}", headers=auth()))
    assert source["state"] == "initialize"


async def _head_is(client: httpx.AsyncClient, server_id: str, name: str) -> bool:
    head = await ok(client.get(f"/v3/sources/{server_id}/command", headers=auth()))
    return bool(head["command_name"] == name)


async def test_locks_of_two_tenants_never_share_a_key(client: httpx.AsyncClient) -> None:
    """Tenant `t` locking target `x:y` and tenant `t:x` locking target `y` are two locks."""
    tenant = f"col-{uuid.uuid4().hex[:6]}"
    started = []
    for domain, vm_id in ((tenant, "x:y"), (f"{tenant}:x", "y")):
        source = (await ok(client.post("/v3/sources", json=server_body(), headers=auth(domain))))[
            "id"
        ]
        body = task_body(source, vm_id)
        task_id = (await ok(client.post("/v3/tasks", json=body, headers=auth(domain))))["id"]
        response = await client.post(
            f"/v3/tasks/{task_id}/action", json={"operation": "start"}, headers=auth(domain)
        )
        started.append((response.status_code, response.text))
    assert [status for status, _ in started] == [200, 200], started

"""Small HTTP helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.conftest import auth


def server_body(hostname: str | None = None, **fields: Any) -> dict[str, Any]:
    hostname = hostname or f"host-{uuid.uuid4().hex[:10]}"
    return {
        "hostname": hostname,
        "name": hostname,
        "ip": "10.0.0.7",
        "os_type": "LINUX",
        "os_version": "UBUNTU_22_04_64BIT",
        **fields,
    }


def task_body(source_id: str, vm_id: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "name": f"task-{uuid.uuid4().hex[:8]}",
        "type": "MIGRATE_FILE",
        "os_type": "LINUX",
        "source_server": {"id": source_id},
        "target_server": {"vm_id": vm_id or uuid.uuid4().hex, "name": "target"},
        "migration_ip": "192.168.0.10",
        **fields,
    }


def assert_sms_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error_code"] == code, body
    assert isinstance(body["error_msg"], str) and body["error_msg"]
    return body


async def ok(response: Any, status: int = 200) -> Any:
    response = await response
    assert response.status_code == status, response.text
    return response.json() if response.content else None


async def register(
    client: httpx.AsyncClient, body: dict[str, Any] | None = None, domain: str = "domain-a"
) -> str:
    reply = await ok(client.post("/v3/sources", json=body or server_body(), headers=auth(domain)))
    return str(reply["id"])


async def create_task(
    client: httpx.AsyncClient, source_id: str, vm_id: str | None = None, domain: str = "domain-a"
) -> str:
    reply = await ok(
        client.post("/v3/tasks", json=task_body(source_id, vm_id), headers=auth(domain))
    )
    return str(reply["id"])


async def act(
    client: httpx.AsyncClient, task_id: str, operation: str, domain: str = "domain-a"
) -> httpx.Response:
    return await client.post(
        f"/v3/tasks/{task_id}/action", json={"operation": operation}, headers=auth(domain)
    )


async def report(
    client: httpx.AsyncClient,
    server_id: str,
    command: str,
    result: str = "success",
    detail: Any = None,
    domain: str = "domain-a",
) -> httpx.Response:
    body = {"command_name": command, "result": result, "result_detail": detail or {"msg": "ok"}}
    return await client.post(
        f"/v3/sources/{server_id}/command_result", json=body, headers=auth(domain)
    )


async def source(
    client: httpx.AsyncClient, server_id: str, domain: str = "domain-a"
) -> dict[str, Any]:
    result: dict[str, Any] = await ok(client.get(f"/v3/sources/{server_id}", headers=auth(domain)))
    return result


async def task(client: httpx.AsyncClient, task_id: str, domain: str = "domain-a") -> dict[str, Any]:
    result: dict[str, Any] = await ok(client.get(f"/v3/tasks/{task_id}", headers=auth(domain)))
    return result


async def eventually(check: Any, timeout: float = 10.0) -> Any:
    """Polls `check()` (async) until it returns something truthy."""
    async with asyncio.timeout(timeout):
        while True:
            value = await check()
            if value:
                return value
            await asyncio.sleep(0.1)


async def eventually_or(check: Any, otherwise: Any, timeout: float = 30.0) -> Any:
    """What `check()` returns once it holds, or what `otherwise()` says after `timeout`:
    the assertion that follows then shows what is missing instead of a bare timeout."""
    try:
        return await eventually(check, timeout)
    except TimeoutError:
        return await otherwise()

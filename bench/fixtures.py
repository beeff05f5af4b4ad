"""What the measures start from: the bench's tenant and token, register bodies, and
registered servers with started tasks."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aio_pika
import httpx

from shared.auth import mint
from shared.topology import COMMANDS
from tests.support.integrator import event_tap

SECRET = "bench-secret-bench-secret-bench-secret"
DOMAIN = "bench"
SMALL = json.dumps({"name": "host-1", "ip": "10.0.0.1", "cpu_quantity": 2})
EXAMPLE = json.loads(
    (Path(__file__).parents[1] / "tests/fixtures/sms-register-example.json").read_text()
)


def token() -> dict[str, str]:
    return {"X-Auth-Token": mint(SECRET, DOMAIN, ["*"], ttl=86400)}


def register_bodies(count: int, tag: str) -> list[str]:
    """The seed page's example with varied hostnames and addresses."""
    bodies = []
    for i in range(count):
        body = {
            **EXAMPLE,
            "name": f"{tag}-{i}",
            "hostname": f"{tag}-{i}",
            "ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
        }
        bodies.append(json.dumps(body))
    return bodies


async def preload_registers(amqp_url: str, bodies: list[str]) -> None:
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(COMMANDS)
        window = asyncio.Semaphore(512)

        async def one(body: str) -> None:
            async with window:
                message = aio_pika.Message(
                    body.encode(),
                    message_id=uuid.uuid4().hex,
                    delivery_mode=2,
                    headers={"domain_id": DOMAIN, "schema_version": 1},
                    content_type="application/json",
                )
                await exchange.publish(message, routing_key="sms.source.register")

        await asyncio.gather(*(one(b) for b in bodies))


async def registered(amqp_url: str, bodies: list[str]) -> list[str]:
    """Registers `bodies` straight through the broker (the HTTP path is measured elsewhere)
    and answers the servers' ids, read from their `source.registered` events."""
    async with event_tap(amqp_url, "source.registered") as tap:
        await preload_registers(amqp_url, bodies)
        found = await tap.wait_for(len(bodies), timeout=1800)
    return [str(event["aggregate_id"]) for event in found]


def small_bodies(count: int, tag: str) -> list[str]:
    """Registers of a fleet: the fields the registry requires and no more."""
    return [
        json.dumps(
            {
                "name": f"{tag}-{i}",
                "hostname": f"{tag}-{i}",
                "ip": f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}",
                "os_type": "LINUX",
                "os_version": "UBUNTU_22_04_64BIT",
            }
        )
        for i in range(count)
    ]


def task_body(server_id: str, name: str) -> dict[str, object]:
    return {
        "name": name,
        "type": "MIGRATE_FILE",
        "os_type": "LINUX",
        "migration_ip": "1.1.1.1",
        "source_server": {"id": server_id},
        "target_server": {"vm_id": f"vm-{server_id}", "name": "t"},
    }


async def start_tasks(
    http: httpx.AsyncClient, server_ids: list[str], concurrency: int = 1
) -> list[str]:
    """A task for each server, started (its server goes to `initialize`, its agent is
    handed START): the tasks' ids, in the servers' order."""
    window = asyncio.Semaphore(concurrency)

    async def one(index: int, server_id: str) -> str:
        async with window:
            task_id = await answered(http, "/v3/tasks", task_body(server_id, f"t{index}"), "id")
            await answered(http, f"/v3/tasks/{task_id}/action", {"operation": "start"})
            return task_id

    return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(server_ids))))


async def started_servers(url: str, count: int) -> tuple[list[str], list[str]]:
    """`count` registered servers whose tasks were started (state initialize), and the
    tasks."""
    async with httpx.AsyncClient(base_url=url, headers=token(), timeout=60) as http:
        ids = [
            await answered(http, "/v3/sources", json.loads(body), "id")
            for body in register_bodies(count, f"cr-{uuid.uuid4().hex[:4]}")
        ]
        return ids, await start_tasks(http, ids)


async def answered(http: httpx.AsyncClient, path: str, body: object, field: str = "") -> str:
    """POSTs until answered 200 (a 503 on a loaded machine is retried; the calls are
    idempotent: the same register is an update, the same start a refusal); the field."""
    for _ in range(10):
        response = await http.post(path, json=body)
        if response.status_code == 200:
            return str(response.json()[field]) if field else ""
        if response.status_code != 503:
            break
        await asyncio.sleep(1)
    raise RuntimeError(f"{path}: {response.status_code} {response.text[:300]}")


def progress_report(percent: int) -> dict[str, object]:
    """An UpdateTaskSpeed report as an agent sends it, at `percent` of a 1 GB migration."""
    return {
        "subtask_name": "MIGRATE_LINUX_FILE",
        "progress": percent,
        "replicatesize": percent * 10_000_000,
        "totalsize": 1_000_000_000,
        "migrate_speed": 95.5,
        "remain_time": (100 - percent) * 6,
        "total_cpu_usage": 30.0,
        "agent_cpu_usage": 3.5,
    }

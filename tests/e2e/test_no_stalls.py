"""Nothing one tenant does stalls the others (issue: agents you can trust).

Guest-VM commands do not hold the executor's deliveries while they run; agents' events
do not wait behind commands; an agent runs no more than its parallelism at once; every
overdue run is swept however many are processing; and every report is delivered,
whatever its output holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aio_pika
import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage

from shared.contracts.scripts import Heartbeat
from tests.conftest import token
from tests.e2e.helpers import eventually
from tests.e2e.test_scripts import (
    _all_online,
    batch,
    consuming,
    create_script,
    execute,
    operate,
    order,
    vm_exec,
    wait_done,
)
from tests.support.processes import System

COC_A = {"X-Auth-Token": token("domain-a", ["coc:*"])}
COC_B = {"X-Auth-Token": token("domain-b", ["coc:*"])}
VMS = 10
PER_VM = 20


@pytest.fixture(scope="module")
async def vm_fleet(system: System, amqp_url: str) -> AsyncIterator[list[str]]:
    """Ten VM agents that each run twenty commands at once, and one agent of domain-b."""
    tag = uuid.uuid4().hex[:6]
    vms = [f"vm-stall-{tag}-{i}" for i in range(VMS)]
    names = [f"stall-{tag}-{i}" for i in range(VMS)]
    parallel = {"REHOST_AGENT_PARALLEL": str(PER_VM)}
    for name, vm in zip(names, vms, strict=True):
        system.add_agent(name, "--vm-uuid", vm, extra=parallel).start()
    tenant_b = f"tenant-b-{tag}"
    system.add_agent(tenant_b, extra={"REHOST_AGENT_DOMAIN": "domain-b"}).start()
    await consuming(amqp_url, [*names, tenant_b])
    yield [*vms, tenant_b]
    for name in [*names, tenant_b]:
        system.discard(f"agent-{name}")


async def test_two_hundred_guest_commands_of_two_seconds_do_not_stall_anyone(
    system: System, vm_fleet: list[str]
) -> None:
    vms, tenant_b = vm_fleet[:VMS], vm_fleet[VMS]
    limits = httpx.Limits(max_connections=VMS * PER_VM + 20)
    async with (
        httpx.AsyncClient(base_url=system.gateway_url, timeout=60, limits=limits) as client,
        httpx.AsyncClient(base_url=system.gateway_url, timeout=30, headers=COC_B) as coc_b,
    ):
        await _all_online(coc_b, [tenant_b])

        async def online(vm: str) -> bool:
            return (await vm_exec(client, "true", vm=vm)).status_code == 200

        for vm in vms:
            await eventually(lambda vm=vm: online(vm), timeout=20)  # type: ignore[misc]
        script_b = await create_script(coc_b, "sleep 1; echo b")
        started = time.monotonic()
        commands = [
            vm_exec(client, "sleep 2; echo done", timeout=25, vm=vm)
            for vm in vms
            for _ in range(PER_VM)
        ]
        storm = asyncio.gather(*commands)
        # Meanwhile another tenant's executions run, one after another, and finish.
        b_runs = []
        while not storm.done():
            execute_uuid = await execute(coc_b, script_b, [[tenant_b]])
            b_runs.append(await wait_done(coc_b, execute_uuid, timeout=20))
        answers = await storm
        took = time.monotonic() - started
    failures = [r.text for r in answers if r.status_code != 200 or not r.json()["success"]]
    assert not failures, failures[:3]
    assert all(r.json()["stream"].startswith("standardStream: done") for r in answers)
    assert took < 20, took  # 2 s each, 20 at once on each VM
    assert b_runs and all(run["statistics"]["success"] == 1 for run in b_runs), b_runs


async def test_an_agent_runs_no_more_than_its_parallelism_at_once(
    system: System, amqp_url: str, client: httpx.AsyncClient
) -> None:
    tag = uuid.uuid4().hex[:6]
    vm = f"vm-par-{tag}"
    name = f"par-{tag}"
    agent = system.add_agent(name, "--vm-uuid", vm, extra={"REHOST_AGENT_PARALLEL": "2"})
    agent.start()
    try:
        await consuming(amqp_url, [name])

        async def online() -> bool:
            return (await vm_exec(client, "true", vm=vm)).status_code == 200

        await eventually(online, timeout=20)
        started = time.monotonic()
        answers = await asyncio.gather(*(vm_exec(client, "sleep 1", vm=vm) for _ in range(6)))
        took = time.monotonic() - started
    finally:
        system.discard(f"agent-{name}")
    assert [r.status_code for r in answers] == [200] * 6
    assert took >= 2.9, took  # three rounds of two, not six at once


class SilentAgent:
    """An agent that is online (it beats) but never reports: its runs can only time out."""

    def __init__(self, amqp_url: str, agent_sn: str) -> None:
        self.amqp_url = amqp_url
        self.agent_sn = agent_sn

    @staticmethod
    async def _drop(message: AbstractIncomingMessage) -> None:
        await message.ack()

    async def run(self) -> None:
        connection = await aio_pika.connect_robust(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"rehost.agent.{self.agent_sn}", durable=True)
            await queue.consume(self._drop)
            events = await channel.get_exchange("rehost.events", ensure=False)
            while True:
                now = datetime.now(UTC).isoformat()
                beat = Heartbeat(agent_sn=self.agent_sn, hostname="silent", running=0, at=now)
                message = aio_pika.Message(
                    beat.model_dump_json().encode(),
                    headers={"domain_id": "domain-a", "schema_version": 1},
                )
                await events.publish(message, routing_key=f"agent.{self.agent_sn}.heartbeat")
                await asyncio.sleep(1)


async def test_every_overdue_run_is_swept_however_many_are_processing(
    system: System, amqp_url: str
) -> None:
    silent = f"silent-{uuid.uuid4().hex[:6]}"
    beating = asyncio.create_task(SilentAgent(amqp_url, silent).run())
    try:
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30, headers=COC_A) as coc:
            script = await create_script(coc, "true")

            async def online() -> bool:
                execute_uuid = await execute(coc, script, [[silent]], timeout=5)
                current = await order(coc, execute_uuid)
                return current["statistics"]["failed"] == 0

            await eventually(online, timeout=20)
            # The overdue ones are the oldest; a hundred newer ones stay processing.
            overdue = [await execute(coc, script, [[silent]], timeout=5) for _ in range(5)]
            waiting = [await execute(coc, script, [[silent]], timeout=1800) for _ in range(100)]
            try:
                for execute_uuid in overdue:
                    done = await wait_done(coc, execute_uuid, timeout=30)
                    assert done["statistics"]["timeout"] == 1, done
            finally:
                for execute_uuid in waiting:
                    await operate(coc, execute_uuid, "CANCEL_ORDER")
    finally:
        beating.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beating


async def test_a_megabyte_of_nul_bytes_is_reported_not_lost(system: System, amqp_url: str) -> None:
    name = f"nul-{uuid.uuid4().hex[:6]}"
    system.add_agent(name).start()
    try:
        await consuming(amqp_url, [name])
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30, headers=COC_A) as coc:
            await _all_online(coc, [name])
            script = await create_script(coc, "head -c 1048576 /dev/zero")
            execute_uuid = await execute(coc, script, [[name]], timeout=30)
            await wait_done(coc, execute_uuid, timeout=30)
            [host] = (await batch(coc, execute_uuid, 1))["instances"]
    finally:
        system.discard(f"agent-{name}")
    assert host["status"] == "SUCCESS", host["error"]
    # As JSON each NUL takes six bytes: the report carried what fits, and said what it cut.
    assert host["stdout"].startswith("\0" * 1000) and host["dropped_bytes"] > 0

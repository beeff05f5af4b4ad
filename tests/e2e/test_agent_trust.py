"""A hostile agent against the real broker and services (issue: agents you can trust).

Two real agents run with their own RabbitMQ accounts and the README's permissions: the
victim serves a VM, the attacker publishes forged events with its own real account.
Nothing the attacker says changes anything for the victim; every forged event ends in
the executor's dead-letter queue with its reason.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused, ChannelPreconditionFailed

from shared.contracts.scripts import Heartbeat, RunFinished
from tests.conftest import token
from tests.e2e.helpers import eventually
from tests.e2e.test_scripts import (
    _all_online,
    batch,
    consuming,
    create_script,
    execute,
    vm_exec,
    wait_done,
    wait_status,
)
from tests.support import broker
from tests.support.processes import Process, System

DLQ = "rehost.script-executor.dlq"


@dataclass
class Pair:
    victim: str
    victim_vm: str
    victim_agent: Process
    attacker: str
    attacker_user: str
    attacker_url: str


@pytest.fixture(scope="module")
async def pair(system: System, amqp_url: str) -> AsyncIterator[Pair]:
    tag = uuid.uuid4().hex[:6]
    victim, attacker = f"db-{tag}", f"web-{tag}"
    victim_vm = f"vm-{tag}"
    victim_user, victim_url = await asyncio.to_thread(broker.agent_account, amqp_url, victim)
    attacker_user, attacker_url = await asyncio.to_thread(broker.agent_account, amqp_url, attacker)
    agents = [
        system.add_agent(
            victim,
            "--vm-uuid",
            victim_vm,
            "--vm-name",
            "db",
            extra={"REHOST_AGENT_AMQP_URL": victim_url},
        ),
        system.add_agent(attacker, extra={"REHOST_AGENT_AMQP_URL": attacker_url}),
    ]
    for agent in agents:
        agent.start()
    await consuming(amqp_url, [victim, attacker])
    yield Pair(victim, victim_vm, agents[0], attacker, attacker_user, attacker_url)
    for name in (f"agent-{victim}", f"agent-{attacker}"):
        system.discard(name)
    for user in (victim_user, attacker_user):
        await asyncio.to_thread(broker.rabbitmqctl, "delete_user", user)


@pytest.fixture
async def coc(system: System, pair: Pair) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"X-Auth-Token": token("domain-a", ["coc:*"])}
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30, headers=headers) as http:
        await _all_online(http, [pair.victim, pair.attacker])
        yield http


class Attacker:
    """Publishes to `rehost.events` with the attacker's own account, as its agent could."""

    def __init__(self, url: str, user: str) -> None:
        self.url = url
        self.user = user
        self.sent: list[str] = []

    async def publish(
        self,
        routing_key: str,
        body: Heartbeat | RunFinished,
        *,
        domain: str = "domain-a",
        user_id: str | None = None,
    ) -> str:
        message_id = uuid.uuid4().hex
        connection = await aio_pika.connect(self.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange("rehost.events", ensure=False)
            message = aio_pika.Message(
                body.model_dump_json().encode(),
                message_id=message_id,
                headers={"domain_id": domain, "schema_version": 1},
                user_id=user_id or self.user,
                content_type="application/json",
            )
            await events.publish(message, routing_key=routing_key)
        self.sent.append(message_id)
        return message_id


def beat(agent_sn: str, vm_uuid: str | None = None) -> Heartbeat:
    now = datetime.now(UTC).isoformat()
    return Heartbeat(agent_sn=agent_sn, vm_uuid=vm_uuid, hostname="evil", running=0, at=now)


async def dead_letters(amqp_url: str, ids: set[str]) -> dict[str, str]:
    """message id → `x-rehost-reason`, for those of `ids` in the executor's DLQ (taken)."""
    found: dict[str, str] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(DLQ, passive=True)
        while (message := await queue.get(fail=False)) is not None:
            if message.message_id in ids:
                found[message.message_id] = str((message.headers or {}).get("x-rehost-reason"))
                await message.ack()
            else:
                await message.nack(requeue=True)
                break
    return found


async def test_an_agent_cannot_speak_for_another_agent(
    coc: httpx.AsyncClient, client: httpx.AsyncClient, pair: Pair, amqp_url: str
) -> None:
    attacker = Attacker(pair.attacker_url, pair.attacker_user)
    # The victim runs a script that fails; while it runs, the attacker reports SUCCESS for it.
    script = await create_script(coc, "sleep 3; echo real; exit 3")
    execute_uuid = await execute(coc, script, [[pair.victim]])
    await wait_status(coc, execute_uuid, "PROCESSING")
    [host] = (await batch(coc, execute_uuid, 1))["instances"]
    run_id = f"{execute_uuid}.{host['instance_id']}"

    def forged(agent_sn: str) -> RunFinished:
        return RunFinished(
            run_id=run_id,
            agent_sn=agent_sn,
            status="SUCCESS",
            exit_code=0,
            duration_ms=1,
            stdout="forged",
            stderr="",
        )

    reasons = {
        # A heartbeat naming the victim: move it to another tenant and VM, keep it alive.
        await attacker.publish(
            f"agent.{pair.attacker}.heartbeat", beat(pair.victim, "vm-evil"), domain="domain-b"
        ): "sn_mismatch",
        # Its own heartbeat, claiming the victim's VM (and another tenant).
        await attacker.publish(
            f"agent.{pair.attacker}.heartbeat",
            beat(pair.attacker, pair.victim_vm),
            domain="domain-b",
        ): "vm_mismatch",
        # Reports on the victim's run, under its own name and under the victim's.
        await attacker.publish(
            f"agent.{pair.attacker}.finished", forged(pair.attacker)
        ): "not_dispatched",
        await attacker.publish(
            f"agent.{pair.attacker}.finished", forged(pair.victim)
        ): "sn_mismatch",
    }
    # What the broker itself refuses: the victim's routing key, the victim's user_id.
    with pytest.raises(ChannelAccessRefused):
        await attacker.publish(f"agent.{pair.victim}.finished", forged(pair.victim))
    with pytest.raises(ChannelPreconditionFailed):
        await attacker.publish(
            f"agent.{pair.attacker}.heartbeat", beat(pair.attacker), user_id=f"agent-{pair.victim}"
        )

    done = await wait_done(coc, execute_uuid)
    [host] = (await batch(coc, execute_uuid, 1))["instances"]
    assert (host["status"], host["exit_code"], host["stdout"]) == ("FAILED", 3, "real\n")
    assert done["statistics"]["failed"] == 1

    async def all_dead_lettered() -> dict[str, str] | None:
        found.update(await dead_letters(amqp_url, set(reasons)))
        return found if len(found) == len(reasons) else None

    found: dict[str, str] = {}
    await eventually(all_dead_lettered, timeout=20)
    for message_id, reason in reasons.items():
        assert reason in found[message_id], (reason, found[message_id])

    # The victim still serves its tenant and its VM: the VM's command runs on the victim's
    # agent (its pid is the script's parent), and another tenant finds the victim offline.
    response = await vm_exec(client, "echo $PPID", vm=pair.victim_vm)
    assert response.status_code == 200, response.text
    assert response.json()["stream"].startswith(f"standardStream: {pair.victim_agent.popen.pid}\n")
    await assert_offline_for("domain-b", coc.base_url, pair.victim)


async def assert_offline_for(domain: str, base_url: httpx.URL, agent_sn: str) -> None:
    """An execution of `domain` on `agent_sn` finds its agent offline."""
    headers = {"X-Auth-Token": token(domain, ["coc:*"])}
    async with httpx.AsyncClient(base_url=base_url, timeout=30, headers=headers) as http:
        execute_uuid = await execute(http, await create_script(http, "true"), [[agent_sn]])
        await wait_done(http, execute_uuid)
        [host] = (await batch(http, execute_uuid, 1))["instances"]
        assert host["status"] == "FAILED" and "offline" in host["error"]


async def test_an_operator_binds_an_agent_and_its_heartbeats_cannot_move_it(
    system: System, base_env: dict[str, str], amqp_url: str
) -> None:
    sn = f"op-{uuid.uuid4().hex[:6]}"
    allow = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.cli", "agents", "allow", sn, "--domain", "domain-b"],
        env=base_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert allow.returncode == 0 and f"{sn}: allowed" in allow.stdout, allow.stderr
    agent = system.add_agent(sn)  # its own header says domain-a (REHOST_AGENT_DOMAIN)
    agent.start()
    try:
        await consuming(amqp_url, [sn])
        b = {"X-Auth-Token": token("domain-b", ["coc:*"])}
        async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30, headers=b) as http:
            await _all_online(http, [sn])  # domain-b reaches it
        await assert_offline_for("domain-a", httpx.URL(system.gateway_url), sn)
    finally:
        system.discard(f"agent-{sn}")

"""Rehost on a three-node RabbitMQ cluster, two replicas of every service and of the
gateway, and an agent: a broker node killed (`kill -9` of its Erlang VM) under register,
command-result and script load, then brought back; then the same with a service replica
killed at the same moment. Nothing answered 200 is lost or applied twice."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aio_pika.abc import AbstractIncomingMessage

from shared import failover
from shared.topology import EVENTS
from tests.conftest import auth
from tests.e2e.helpers import act, create_task, eventually, eventually_or, ok, register
from tests.e2e.test_faults import Load, all_stored
from tests.e2e.test_run_supervisor import ResultLoad, recorded_marks
from tests.e2e.test_scripts import COC, create_script, execute, wait_done
from tests.support.cluster import Cluster
from tests.support.processes import System

REPLY_TIMEOUT = 3.0
# Starting three broker nodes and nine processes on two cores takes a minute of its own.
pytestmark = pytest.mark.timeout(300)
SERVICES = ("registry", "command-result", "task-lock", "script-executor")
DOMAIN = "domain-a"  # the agent's tenant (REHOST_AGENT_DOMAIN of the test system)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    started = Cluster.start()
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Replicated:
    """The system on the cluster: each process given the nodes' URLs from its own start."""

    system: System
    gateways: list[str]
    agent_sn: str

    def gateway(self, index: int) -> str:
        return self.gateways[index % len(self.gateways)]


@pytest.fixture(scope="module")
def replicated(
    cluster: Cluster, base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Replicated]:
    data = tmp_path_factory.mktemp("cluster-var")
    env = {
        **base_env,
        "REHOST_DATA_DIR": str(data),
        "REHOST_STORE_URL": base_env["REHOST_STORE_URL"],
    }
    system = System(env, tmp_path_factory.mktemp("cluster-logs"))
    spread = 0
    for service in SERVICES:
        port = f"REHOST_{service.upper().replace('-', '_')}_HEALTH_PORT"
        for replica in (1, 2):
            urls = {"REHOST_AMQP_URL": cluster.urls(spread)}
            system.add(service, port, extra=urls, name=f"{service}-{replica}")
            spread += 1
    for replica in (1, 2):
        system.add(
            "gateway",
            None,
            extra={"REHOST_AMQP_URL": cluster.urls(spread)},
            name=f"gateway-{replica}",
        )
        spread += 1
    agent_sn = f"cluster-{uuid.uuid4().hex[:6]}"
    system.add_agent(agent_sn, extra={"REHOST_AMQP_URL": cluster.urls(spread)})
    try:
        for process in system.processes.values():
            process.start(wait=60)
        gateways = [system[f"gateway-{r}"].ready_url.removesuffix("/readyz") for r in (1, 2)]
        yield Replicated(system, gateways, agent_sn)
    finally:
        system.stop_all()


@dataclass
class Tap:
    """Events as an integrator keeps them on a cluster: a quorum queue of its own, read
    through a connection that moves to a live node (at least once: duplicates allowed)."""

    events: list[dict[str, Any]] = field(default_factory=list)

    async def on(self, message: AbstractIncomingMessage) -> None:
        self.events.append(json.loads(message.body))
        await message.ack()

    def changes(self, kind: str) -> set[tuple[str, int]]:
        """Each change once: (aggregate, version), whatever duplicates arrived."""
        return {
            (e["aggregate_id"], e["aggregate_version"]) for e in self.events if e["type"] == kind
        }

    def states(self, server_id: str) -> list[str]:
        changes = {
            e["aggregate_version"]: e["data"]["to"]
            for e in self.events
            if e["type"] == "source.state_changed" and e["aggregate_id"] == server_id
        }
        return [changes[v] for v in sorted(changes)]


@pytest.fixture
async def tap(cluster: Cluster) -> AsyncIterator[Tap]:
    connection = await failover.connect(cluster.urls(), "test-tap")
    tapped = Tap()
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            f"test.tap.{uuid.uuid4().hex[:8]}", durable=True, arguments={"x-queue-type": "quorum"}
        )
        for key in ("source.registered", "source.state_changed"):
            await queue.bind(EVENTS, routing_key=key)
        await queue.consume(tapped.on)
        yield tapped
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()


class Transitions:
    """Reports START then SYNC for each started server, as an agent would: each again after
    a 503 until answered 200; keeps the slowest answer."""

    def __init__(self, clients: list[httpx.AsyncClient], servers: list[str]) -> None:
        self.clients = clients
        self.servers = servers
        self.slowest = 0.0
        self.bad: list[str] = []

    async def report(self, index: int, server_id: str, command: str) -> None:
        body = {"command_name": command, "result": "success", "result_detail": {"msg": "ok"}}
        for attempt in range(60):
            client = self.clients[(index + attempt) % len(self.clients)]
            started = time.monotonic()
            try:
                response = await client.post(
                    f"/v3/sources/{server_id}/command_result", json=body, headers=auth(DOMAIN)
                )
            except httpx.TransportError as exc:
                self.bad.append(repr(exc))
                await asyncio.sleep(0.2)
                continue
            self.slowest = max(self.slowest, time.monotonic() - started)
            if response.status_code == 200:
                return
            if response.status_code != 503:
                self.bad.append(response.text)
                return
            await asyncio.sleep(0.2)
        self.bad.append(f"{server_id} {command}: never answered 200")

    async def run(self) -> None:
        for command in ("START", "SYNC"):
            for index, server_id in enumerate(self.servers):
                await self.report(index, server_id, command)
                await asyncio.sleep(0.05)


async def started_servers(client: httpx.AsyncClient, count: int) -> list[str]:
    servers = []
    for _ in range(count):
        server_id = await register(client, domain=DOMAIN)
        task_id = await create_task(client, server_id, domain=DOMAIN)
        assert (await act(client, task_id, "start", domain=DOMAIN)).status_code == 200
        servers.append(server_id)
    return servers


async def execute_on_agent(coc: httpx.AsyncClient, agent_sn: str, seconds: float) -> str:
    """An execution of a script that runs `seconds` on the agent; started again after a 503."""
    script = await create_script(coc, f"sleep {seconds}; echo ok")
    for _ in range(30):
        try:
            return await execute(coc, script, [[agent_sn]], timeout=60)
        except AssertionError:  # a 503 while the system settles: it is retried
            await asyncio.sleep(0.5)
    raise AssertionError("the execution was never started")


async def runs_on(coc: httpx.AsyncClient, agent_sn: str) -> bool:
    """Whether a script runs on the agent now (it is bound and seen online)."""
    done = await wait_done(coc, await execute_on_agent(coc, agent_sn, 0))
    return bool(done["statistics"]["success"] == 1)


async def accepted_results(client: httpx.AsyncClient, server_id: str) -> list[str]:
    """The commands of the server's accepted results, once START and SYNC are among them
    (a result is recorded a hop after its 200), or as they are after 30 s."""
    path = f"/v3/sources/{server_id}/command_results"

    async def listed() -> list[str]:
        history = (await ok(client.get(path, headers=auth(DOMAIN))))["command_results"]
        return [r["command_name"] for r in history if r["accepted"]]

    async def both() -> list[str] | None:
        names = await listed()
        return names if {"START", "SYNC"} <= set(names) else None

    result: list[str] = await eventually_or(both, listed)
    return result


async def calls_reach(loads: list[Load], count: int) -> bool:
    return sum(len(load.statuses) for load in loads) >= count


async def node_loss(
    cluster: Cluster,
    replicated: Replicated,
    tap: Tap,
    *,
    victim: int = 1,
    also_kill: str | None = None,
    calls: int = 300,
) -> dict[str, float]:
    """Load on both gateways; a node killed, then brought back (with `also_kill`, a service
    replica killed at the same moment, then started again); what every answer said is
    checked against what was stored and announced. The figures, for the README."""
    async with (
        httpx.AsyncClient(base_url=replicated.gateway(0), timeout=30) as first,
        httpx.AsyncClient(base_url=replicated.gateway(1), timeout=30) as second,
        httpx.AsyncClient(base_url=replicated.gateway(0), timeout=30, headers=COC) as coc,
    ):
        clients = [first, second]
        servers = await started_servers(first, 6)
        marked = await asyncio.gather(*(register(second, domain=DOMAIN) for _ in range(3)))
        await eventually(lambda: runs_on(coc, replicated.agent_sn), timeout=60)
        # Still running when the node dies: its report goes through the node it moved to.
        execute_uuid = await execute_on_agent(coc, replicated.agent_sn, 5)
        registers = [Load(client, DOMAIN) for client in clients]
        results = ResultLoad(second, DOMAIN, list(marked))
        transitions = Transitions(clients, servers)
        loads = asyncio.gather(
            *(load.run(workers=2) for load in registers), results.run(), transitions.run()
        )
        node = cluster.nodes[victim]
        try:
            await asyncio.sleep(2)
            killed_at = time.monotonic()
            await asyncio.to_thread(node.kill)
            if also_kill is not None:
                replicated.system[also_kill].kill()
            await asyncio.sleep(6)
            await asyncio.to_thread(node.start)
            await asyncio.to_thread(node.await_startup)
            if also_kill is not None:
                await asyncio.to_thread(replicated.system[also_kill].start, 60)
            await asyncio.to_thread(cluster.await_members, 3)
            back_at = time.monotonic()
            await eventually(lambda: calls_reach(registers, calls), timeout=300)
        finally:
            for load in registers:
                load.stop()
            results.stop()
            await loads
        unavailable = [
            at
            for load in registers
            for status, at in zip(load.statuses, load.answered_at, strict=True)
            if status == 503 and at >= killed_at
        ]
        figures = {
            "calls": float(sum(len(load.statuses) for load in registers)),
            "503s after the kill": float(len(unavailable)),
            "503s from the kill for (s)": max(unavailable, default=killed_at) - killed_at,
            "node down (s)": back_at - killed_at,
            "slowest answer (s)": max(transitions.slowest, *(ld.slowest for ld in registers)),
        }
        assert not transitions.bad, transitions.bad[:3]
        for load in registers:
            assert not load.bad, load.bad[:3]
        assert not results.bad, results.bad[:3]
        assert figures["slowest answer (s)"] < REPLY_TIMEOUT + 2, figures
        acknowledged = {h: i for load in registers for h, i in load.acknowledged.items()}
        assert len(acknowledged) > 10
        await all_stored(first, DOMAIN, acknowledged)  # each once, with the id answered
        for server_id, answered in results.answered.items():
            stored = await recorded_marks(first, DOMAIN, server_id, answered)
            assert all(stored.count(mark) == 1 for mark in answered), server_id

        async def announced() -> bool:
            registered = {aggregate for aggregate, _ in tap.changes("source.registered")}
            ended = all(tap.states(s)[-1:] == ["syncing"] for s in servers)
            return set(acknowledged.values()) <= registered and ended

        await eventually(announced, timeout=30)
        for server_id in servers:  # each accepted transition applied once, announced once
            assert tap.states(server_id) == ["initialize", "replicate", "syncing"], server_id
            accepted = await accepted_results(first, server_id)
            # An agent's retry of SYNC after a 503 is another round of sync to the lifecycle
            # (accepted, nothing changed); a retried START is refused. The changes are the
            # events above: one each.
            assert accepted.count("START") == 1 and "SYNC" in accepted, (server_id, accepted)
        done = await wait_done(coc, execute_uuid, timeout=90)
        hosts = await ok(coc.get(f"/v1/job/script/orders/{execute_uuid}/batches/1"))
        assert done["status"] == "FINISHED", json.dumps(hosts)
    return figures


async def test_every_queue_is_replicated_over_the_three_nodes(
    cluster: Cluster, replicated: Replicated
) -> None:
    names = [f"rehost.{s}" for s in SERVICES] + [f"rehost.agent.{replicated.agent_sn}"]
    for name in names:
        assert cluster.queue_members(name) == [n.node for n in cluster.nodes], name


async def test_a_broker_node_killed_under_load_loses_nothing(
    cluster: Cluster, replicated: Replicated, tap: Tap
) -> None:
    figures = await node_loss(cluster, replicated, tap)
    print("node loss:", figures)


async def test_a_node_and_a_service_replica_killed_together_lose_nothing(
    cluster: Cluster, replicated: Replicated, tap: Tap
) -> None:
    figures = await node_loss(cluster, replicated, tap, victim=2, also_kill="registry-1")
    print("node and registry replica loss:", figures)


@pytest.mark.soak
@pytest.mark.timeout(3600)
async def test_soak_nodes_killed_again_and_again_under_thousands_of_calls(
    cluster: Cluster, replicated: Replicated, tap: Tap
) -> None:
    replicas = ("command-result-1", None, "task-lock-2", None, "script-executor-1", None)
    for round_, replica in enumerate(replicas):
        figures = await node_loss(
            cluster, replicated, tap, victim=round_ % 3, also_kill=replica, calls=1500
        )
        print(f"soak round {round_ + 1}:", figures, flush=True)

"""Script fan-out over real agent processes, beside the same work done by local subprocesses.

Each agent is a real `rehost agent` process on this machine, consuming its own queue;
the executor plans the batches, sends each host its run and waits for the results.
The baseline runs the same script file with the same interpreter as the agent does
(`/bin/sh FILE`), in the same batches, as plain subprocesses: what the fan-out would
cost with no control plane at all.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import httpx

from tests.support import broker
from tests.support.integrator import event_tap
from tests.support.processes import System

BIG_OUTPUT = 5_000_000  # bytes an agent relays in the memory measure
WAVE = 25  # agents started at once: 200 Python processes starting together starve each other
RUNS = 3  # timed runs of each; the median is reported (one run varies by a factor of two)


@dataclass(frozen=True)
class FanOut:
    hosts: int
    seconds: float  # median of RUNS
    baseline_seconds: float  # median of RUNS
    agent_rss_mb: float  # the largest peak RSS among the agents


def _batches(agents: list[str], size: int) -> list[dict[str, Any]]:
    return [
        {
            "batch_index": i,
            "rotation_strategy": "CONTINUE",
            "target_instances": [
                {"resource_id": f"ecs-{sn}", "agent_sn": sn, "project_id": "p", "region_id": "r"}
                for sn in agents[start : start + size]
            ],
        }
        for i, start in enumerate(range(0, len(agents), size), start=1)
    ]


async def _post(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> httpx.Response:
    """POSTs, trying again while the gateway answers 503 (a service still busy with
    a crowd of agents that just started)."""
    for _ in range(10):
        response = await http.post(url, json=body)
        if response.status_code != 503:
            break
        await asyncio.sleep(1)
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text}")
    return response


async def _script(http: httpx.AsyncClient, content: str) -> str:
    body = {"name": f"b-{uuid.uuid4().hex[:6]}", "type": "SHELL", "content": content}
    return str((await _post(http, "/v1/job/scripts", body)).json()["data"])


async def _execute(
    http: httpx.AsyncClient, script: str, agents: list[str], size: int, success_rate: str = "100.0"
) -> str:
    """Starts the script over `agents` in batches of `size`; the execution's id."""
    body = {
        "execute_param": {"timeout": 60, "success_rate": success_rate, "execute_user": "root"},
        "execute_batches": _batches(agents, size),
    }
    response = await _post(http, f"/v1/job/scripts/{script}", body)
    return str(response.json()["data"])


async def _run(
    http: httpx.AsyncClient, script: str, agents: list[str], size: int, success_rate: str = "100.0"
) -> dict[str, Any]:
    """Executes the script over `agents` in batches of `size`; the order once it ended
    (or paused, as it does after a batch below the success rate)."""
    order_url = f"/v1/job/script/orders/{await _execute(http, script, agents, size, success_rate)}"
    while True:
        order: dict[str, Any] = (await http.get(order_url)).json()["data"]
        if order["status"] in ("FINISHED", "ABNORMAL", "CANCELED", "PAUSED"):
            return order
        await asyncio.sleep(0.05)


async def _consuming(
    system: System, amqp_url: str, agents: list[str], timeout: float = 120
) -> None:
    for agent_sn in agents:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    if await _has_consumer(amqp_url, agent_sn):
                        break
                    await asyncio.sleep(0.2)
        except TimeoutError:
            log = system[f"agent-{agent_sn}"].tail()
            raise RuntimeError(f"agent {agent_sn} does not consume its queue:\n{log}") from None


async def _has_consumer(amqp_url: str, agent_sn: str) -> bool:
    try:
        return bool((await broker.declared(amqp_url, f"rehost.agent.{agent_sn}"))[1])
    except aio_pika.exceptions.ChannelClosed:  # the agent has not declared its queue yet
        return False


async def _online(http: httpx.AsyncClient, agents: list[str], timeout: float = 120) -> None:
    """Until one execution succeeds on every agent (each has sent its first heartbeat)."""
    script = await _script(http, "true")
    deadline = time.monotonic() + timeout
    while True:
        order = await _run(http, script, agents, 10, success_rate="1")
        if order["statistics"]["success"] == len(agents):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"agents not online: {order['statistics']}")
        await asyncio.sleep(1)


async def local_baseline(hosts: int, size: int) -> float:
    """`/bin/sh FILE` with FILE holding `true`, `hosts` times, `size` at a time."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as script:
        script.write("true\n")
        script.flush()
        started = time.perf_counter()
        for start in range(0, hosts, size):
            processes = [
                await asyncio.create_subprocess_exec("/bin/sh", script.name)
                for _ in range(min(size, hosts - start))
            ]
            await asyncio.gather(*(p.wait() for p in processes))
        return time.perf_counter() - started


async def fan_out(
    system: System, amqp_url: str, http: httpx.AsyncClient, hosts: int, size: int = 10
) -> FanOut:
    agents = [f"bench-{i:03d}" for i in range(hosts)]
    try:
        for start in range(0, hosts, WAVE):
            wave = agents[start : start + WAVE]
            for agent_sn in wave:
                system.add_agent(agent_sn).start()
            await _consuming(system, amqp_url, wave)
        await _online(http, agents)
        script = await _script(http, "true")
        seconds = statistics.median(
            [await _timed(http, amqp_url, script, agents, size) for _ in range(RUNS)]
        )
        peak = max(system.rss_kb(f"agent-{sn}") for sn in agents) / 1024
    finally:
        for agent_sn in agents:
            if f"agent-{agent_sn}" in system.processes:
                system.processes.pop(f"agent-{agent_sn}").stop()
    baseline = statistics.median([await local_baseline(hosts, size) for _ in range(RUNS)])
    return FanOut(hosts, seconds, baseline, peak)


async def _timed(
    http: httpx.AsyncClient, amqp_url: str, script: str, agents: list[str], size: int
) -> float:
    """Seconds from the request to the execution's finished event (polling the order
    would add up to a polling interval to the figure)."""
    async with event_tap(amqp_url, "script.execution.finished") as tap:
        started = time.perf_counter()
        execute_uuid = await _execute(http, script, agents, size)
        await tap.wait_for(1, aggregate_id=execute_uuid, timeout=600)
        seconds = time.perf_counter() - started
    order = (await http.get(f"/v1/job/script/orders/{execute_uuid}")).json()["data"]
    if order["statistics"]["success"] != len(agents):
        raise RuntimeError(f"fan-out did not succeed everywhere: {order['statistics']}")
    return seconds


async def agent_relaying_big_output(
    system: System, amqp_url: str, http: httpx.AsyncClient
) -> tuple[float, float]:
    """An agent's peak RSS before and after it ran a script printing 5 MB (MB, MB)."""
    agent_sn = f"bench-big-{uuid.uuid4().hex[:4]}"
    system.add_agent(agent_sn).start()
    name = f"agent-{agent_sn}"
    try:
        await _consuming(system, amqp_url, [agent_sn])
        await _online(http, [agent_sn])
        idle = system.rss_kb(name) / 1024
        script = await _script(http, f"head -c {BIG_OUTPUT} /dev/zero | tr '\\0' x")
        order = await _run(http, script, [agent_sn], 1)
        if order["statistics"]["success"] != 1:
            raise RuntimeError(f"the 5 MB script failed: {order['statistics']}")
        return idle, system.rss_kb(name) / 1024
    finally:
        system[name].stop()
        del system.processes[name]

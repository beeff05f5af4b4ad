"""Scripts on fleets and guest-VM commands, with real agent processes (issue: script execution)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pwd
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
from aiormq.exceptions import ChannelAccessRefused

from tests.conftest import token
from tests.e2e.helpers import eventually, ok
from tests.support import broker
from tests.support.integrator import event_tap
from tests.support.processes import Process, System

EXAMPLE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "coc-execute-script-example.json").read_text()
)
FLEET = [f"fleet-{i:02d}" for i in range(1, 31)]
COC = {"X-Auth-Token": token("domain-a", ["coc:*"])}


def assert_coc_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error_code"] == code and body["error_msg"], body
    return body


@pytest.fixture(scope="module")
async def fleet(system: System, amqp_url: str) -> AsyncIterator[list[str]]:
    """Thirty real agent processes on this machine."""
    agents = await start_agents(system, amqp_url, FLEET)
    yield FLEET
    for agent in agents:
        agent.stop()


@pytest.fixture
async def coc(system: System, fleet: list[str], amqp_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=system.gateway_url, timeout=30, headers=COC) as http:
        await _all_online(http, fleet)
        yield http


async def start_agents(system: System, amqp_url: str, agents: list[str]) -> list[Process]:
    """Real agent processes, each with its SN, once every one consumes its queue."""
    started = [system.add_agent(sn) for sn in agents]
    for agent in started:
        agent.start()
    await consuming(amqp_url, agents)
    return started


async def consuming(amqp_url: str, agents: list[str], timeout: float = 90) -> None:
    """Waits until every agent consumes its queue."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection, asyncio.timeout(timeout):
        for agent_sn in agents:
            while True:
                channel = await connection.channel()
                try:
                    queue = await channel.declare_queue(f"rehost.agent.{agent_sn}", passive=True)
                    if queue.declaration_result.consumer_count:
                        break
                except aio_pika.exceptions.ChannelClosed:
                    pass
                finally:
                    if not channel.is_closed:
                        await channel.close()
                await asyncio.sleep(0.2)


async def _all_online(http: httpx.AsyncClient, agents: list[str]) -> None:
    """Waits until a one-host execution on each agent would find it online."""
    script = await create_script(http, "true")

    async def online() -> bool:
        groups = [agents[i : i + 10] for i in range(0, len(agents), 10)]
        order = await execute(http, script, groups, timeout=5)
        done = await wait_done(http, order)
        return done["statistics"]["success"] == len(agents)

    await eventually(online, timeout=30)


async def create_script(
    http: httpx.AsyncClient,
    content: str,
    kind: str = "SHELL",
    params: list[dict[str, Any]] | None = None,
) -> str:
    body = {
        "name": f"s-{uuid.uuid4().hex[:6]}",
        "type": kind,
        "content": content,
        "script_params": params or [],
    }
    return str((await ok(http.post("/v1/job/scripts", json=body)))["data"])


def batches(groups: list[list[str]], rotation: str = "CONTINUE") -> list[dict[str, Any]]:
    return [
        {
            "batch_index": i,
            "rotation_strategy": rotation,
            "target_instances": [
                {"resource_id": f"ecs-{sn}", "agent_sn": sn, "project_id": "p1", "region_id": "r1"}
                for sn in group
            ],
        }
        for i, group in enumerate(groups, start=1)
    ]


async def execute(
    http: httpx.AsyncClient,
    script: str,
    groups: list[list[str]],
    *,
    timeout: int = 30,
    success_rate: str = "100.0",
    rotation: str = "CONTINUE",
    params: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    body = {
        "execute_param": {
            "timeout": timeout,
            "success_rate": success_rate,
            "execute_user": "root",
            "script_params": params or [],
        },
        "execute_batches": batches(groups, rotation),
    }
    return str(
        (await ok(http.post(f"/v1/job/scripts/{script}", json=body, headers=headers)))["data"]
    )


async def order(http: httpx.AsyncClient, execute_uuid: str) -> dict[str, Any]:
    result: dict[str, Any] = (await ok(http.get(f"/v1/job/script/orders/{execute_uuid}")))["data"]
    return result


async def wait_status(
    http: httpx.AsyncClient, execute_uuid: str, *status: str, timeout: float = 60
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        current = await order(http, execute_uuid)
        return current if current["status"] in status else None

    result: dict[str, Any] = await eventually(check, timeout=timeout)
    return result


async def wait_done(
    http: httpx.AsyncClient, execute_uuid: str, timeout: float = 60
) -> dict[str, Any]:
    return await wait_status(
        http, execute_uuid, "FINISHED", "ABNORMAL", "CANCELED", timeout=timeout
    )


async def batch(http: httpx.AsyncClient, execute_uuid: str, index: int) -> dict[str, Any]:
    """One batch, each host flattened: instance_id, agent_sn, status, output, times. The
    tests speak Rehost's finer host status (`rehost_status`); `coc_status` is the page's,
    checked in `test_reads_use_the_coc_pages_status_names_units_and_paging`."""
    result: dict[str, Any] = (
        await ok(http.get(f"/v1/job/script/orders/{execute_uuid}/batches/{index}"))
    )["data"]
    result["instances"] = [
        {
            **h,
            "instance_id": h["id"],
            "agent_sn": h["target_instance"]["agent_sn"],
            "status": h["rehost_status"],
            "coc_status": h["status"],
            "error": h["message"] if h["rehost_status"] != "SUCCESS" else None,
            "start_time": h["gmt_created"],
            "end_time": h["gmt_finished"],
        }
        for h in result["execute_instances"]
    ]
    return result


async def operate(
    http: httpx.AsyncClient, execute_uuid: str, operation: str, **extra: Any
) -> httpx.Response:
    return await http.put(
        f"/v1/job/script/orders/{execute_uuid}/operation",
        json={"operation_type": operation, **extra},
    )


async def test_thirty_hosts_in_three_batches(coc: httpx.AsyncClient, amqp_url: str) -> None:
    script = await create_script(
        coc,
        'echo "hello $1 from ${REHOST_RUN_ID##*.}"',
        params=[{"param_name": "who", "param_value": "", "param_order": 1}],
    )
    groups = [FLEET[0:10], FLEET[10:20], FLEET[20:30]]
    async with event_tap(amqp_url, "script.#") as tap:
        execute_uuid = await execute(
            coc,
            script,
            groups,
            params=[{"param_name": "who", "param_value": "world", "param_order": 1}],
        )
        done = await wait_done(coc, execute_uuid)
        await tap.settle(1.0)
    assert done["status"] == "FINISHED"
    assert done["statistics"]["success"] == 30 and done["statistics"]["total"] == 30
    assert done["gmt_created"] and done["gmt_finished"] >= done["gmt_created"]

    details = [await batch(coc, execute_uuid, i) for i in (1, 2, 3)]
    for details_of, group in zip(details, groups, strict=True):
        assert [h["agent_sn"] for h in details_of["instances"]] == group
        for host in details_of["instances"]:
            assert host["status"] == "SUCCESS" and host["exit_code"] == 0
            assert host["stdout"] == f"hello world from {host['instance_id']}\n"
    for earlier, later in itertools.pairwise(details):
        assert max(h["end_time"] for h in earlier["instances"]) <= min(
            h["start_time"] for h in later["instances"]
        )

    mine = [r.body for r in tap.received if r.body["data"].get("execute_uuid") == execute_uuid]
    kinds = [e["type"] for e in mine]
    # In the order they happened: each batch's hosts, then that batch, then the next batch's.
    order = [
        (e["data"]["batch_index"] if e["type"] == "script.batch.finished" else None, e)
        for e in mine
        if e["type"] in ("script.batch.finished", "script.host.finished")
    ]
    closed = 0
    for index, event in order:
        if index is not None:
            closed = index
        else:
            instance = event["data"]["instance_id"]
            assert closed * 10 < instance <= (closed + 1) * 10
    assert kinds.count("script.host.finished") == 30
    assert [e["data"]["batch_index"] for e in mine if e["type"] == "script.batch.finished"] == [
        1,
        2,
        3,
    ]
    assert kinds[0] == "script.execution.started" and kinds[-1] == "script.execution.finished"
    assert mine[-1]["data"]["statistics"] == done["statistics"]
    statistics = (await ok(coc.get(f"/v1/job/script/orders/{execute_uuid}/statistics")))["data"]
    assert statistics["statistics"] == done["statistics"] and statistics["total_instance"] == 30
    assert statistics["execute_statistics"] == [
        {"instance_status": "FINISHED", "instance_count": 30, "batch_indexes": [1, 2, 3]}
    ]
    summaries = (await ok(coc.get(f"/v1/job/script/orders/{execute_uuid}/batches")))["data"]
    assert [b["status"] for b in summaries] == ["FINISHED"] * 3


FAIL_FIRST_FOUR = "n=${REHOST_RUN_ID##*.}; [ $(( (n - 1) % 10 )) -ge 4 ]"  # 4 of every 10 fail


async def test_pause_below_the_success_rate_then_continue_and_cancel(
    coc: httpx.AsyncClient,
) -> None:
    script = await create_script(coc, FAIL_FIRST_FOUR)
    groups = [FLEET[0:10], FLEET[10:20], FLEET[20:30]]
    execute_uuid = await execute(coc, script, groups, success_rate="80", rotation="PAUSE")
    paused = await wait_status(coc, execute_uuid, "PAUSED")
    assert paused["statistics"]["failed"] == 4 and paused["statistics"]["success"] == 6
    await asyncio.sleep(1.5)
    second = await batch(coc, execute_uuid, 2)
    assert second["status"] == "READY" and {h["status"] for h in second["instances"]} == {"READY"}

    assert (await operate(coc, execute_uuid, "CONTINUE_ORDER")).status_code == 200
    await eventually(lambda: _batch_status(coc, execute_uuid, 2, "FINISHED"), timeout=30)
    await wait_status(coc, execute_uuid, "PAUSED")  # batch 2 fell short too
    assert (await operate(coc, execute_uuid, "CANCEL_ORDER")).status_code == 200
    done = await wait_done(coc, execute_uuid)
    assert done["status"] == "CANCELED"
    third = await batch(coc, execute_uuid, 3)
    assert third["status"] == "CANCELED" and {h["status"] for h in third["instances"]} == {
        "CANCELED"
    }
    refused = await operate(coc, execute_uuid, "CONTINUE_ORDER")
    assert_coc_error(refused, 409, "COC.00040901")


async def test_rotation_continue_goes_on_below_the_success_rate(coc: httpx.AsyncClient) -> None:
    script = await create_script(coc, FAIL_FIRST_FOUR)
    execute_uuid = await execute(coc, script, [FLEET[0:10], FLEET[10:20]], success_rate="80")
    done = await wait_done(coc, execute_uuid)
    assert (done["status"], done["rehost_status"]) == ("ABNORMAL", "FINISHED")
    assert done["statistics"]["failed"] == 8 and done["statistics"]["success"] == 12


async def _batch_status(
    http: httpx.AsyncClient, execute_uuid: str, index: int, status: str
) -> bool:
    return (await batch(http, execute_uuid, index))["status"] == status


def _processes_with(marker: str) -> int:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False)
    return len(found.stdout.split())


async def test_a_script_past_its_timeout_is_killed_with_its_children(
    coc: httpx.AsyncClient,
) -> None:
    marker = f"sleep 300.{uuid.uuid4().int % 10**6:06d}"  # a child and a grandchild to find
    script = await create_script(coc, f'sh -c "{marker}" & {marker}; echo never')
    execute_uuid = await execute(coc, script, [FLEET[0:2], FLEET[2:3]], timeout=5)
    await eventually(lambda: _has_processes(marker), timeout=10)
    done = await wait_done(coc, execute_uuid, timeout=40)
    first = await batch(coc, execute_uuid, 1)
    assert {h["status"] for h in first["instances"]} == {"TIMEOUT"}
    assert "timeout" in first["instances"][0]["error"]
    assert (await batch(coc, execute_uuid, 2))["status"] == "FINISHED"  # the batches went on
    assert done["status"] == "ABNORMAL"
    assert _processes_with(marker) == 0


async def _has_processes(marker: str) -> bool:
    return _processes_with(marker) > 0


async def test_an_agent_killed_mid_script_leaves_its_host_timeout(
    coc: httpx.AsyncClient, system: System, amqp_url: str
) -> None:
    doomed = system.add_agent(f"doomed-{uuid.uuid4().hex[:6]}")
    doomed.start()
    sn = doomed.args[1]
    await consuming(amqp_url, [sn])
    await _all_online(coc, [sn])
    script = await create_script(coc, "sleep 30")
    execute_uuid = await execute(coc, script, [[sn, FLEET[0]]], timeout=5)
    await asyncio.sleep(1.0)
    doomed.stop(signal.SIGKILL)
    done = await wait_done(coc, execute_uuid, timeout=40)
    hosts = {h["agent_sn"]: h for h in (await batch(coc, execute_uuid, 1))["instances"]}
    assert hosts[sn]["status"] == "TIMEOUT"
    assert done["status"] == "ABNORMAL"


async def test_five_megabytes_of_output_keep_exactly_the_first_megabyte(
    coc: httpx.AsyncClient, system: System
) -> None:
    sn = FLEET[5]
    idle = system.rss_kb(f"agent-{sn}")
    executor_before = system.rss_kb("script-executor")
    script = await create_script(coc, "head -c 5242880 /dev/zero | tr '\\0' 'a'; echo tail >&2")
    execute_uuid = await execute(coc, script, [[sn]])
    await wait_done(coc, execute_uuid)
    [host] = (await batch(coc, execute_uuid, 1))["instances"]
    marker = "\n[rehost: 4194309 bytes of output dropped]"
    assert host["stdout"] == "a" * 1_048_576 + marker
    assert host["stderr"] == "" and host["dropped_bytes"] == 4_194_309
    assert system.rss_kb(f"agent-{sn}") - idle < 16_000  # kB: bounded, not 5 MB more
    assert system.rss_kb("script-executor") - executor_before < 32_000


INJECTIONS = ["; rm -rf /", "$(touch {canary})", "`touch {canary}`", 'it\'s "quoted"', "two\nlines"]


async def test_parameters_are_data_not_code(coc: httpx.AsyncClient, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    values = [v.format(canary=canary) for v in INJECTIONS]
    declared = [{"param_name": f"p{i}", "param_value": "", "param_order": i} for i in range(1, 6)]
    script = await create_script(
        coc, 'for a in "$@"; do printf "%s\\0" "$a"; done; printf "%s\\0" "$p1"', params=declared
    )
    params = [
        {"param_name": f"p{i}", "param_value": v, "param_order": i} for i, v in enumerate(values, 1)
    ]
    execute_uuid = await execute(coc, script, [[FLEET[1]]], params=params)
    await wait_done(coc, execute_uuid)
    [host] = (await batch(coc, execute_uuid, 1))["instances"]
    assert host["stdout"].split("\0")[:-1] == [*values, values[0]]
    assert not canary.exists()


async def test_python_scripts_get_ordered_arguments(coc: httpx.AsyncClient) -> None:
    declared = [
        {"param_name": n, "param_value": "", "param_order": i} for i, n in ((1, "a"), (2, "b"))
    ]
    script = await create_script(
        coc, "import sys; print(sys.argv[1:])", kind="PYTHON", params=declared
    )
    params = [
        {"param_name": "b", "param_value": "second", "param_order": 2},
        {"param_name": "a", "param_value": "first", "param_order": 1},
    ]
    execute_uuid = await execute(coc, script, [[FLEET[2]]], params=params)
    await wait_done(coc, execute_uuid)
    [host] = (await batch(coc, execute_uuid, 1))["instances"]
    assert host["stdout"] == "['first', 'second']\n"


async def test_an_offline_host_fails_at_once(coc: httpx.AsyncClient) -> None:
    script = await create_script(coc, "true")
    execute_uuid = await execute(coc, script, [["nobody-home", FLEET[3]]])
    done = await wait_done(coc, execute_uuid, timeout=15)
    hosts = {h["agent_sn"]: h for h in (await batch(coc, execute_uuid, 1))["instances"]}
    assert hosts["nobody-home"]["status"] == "FAILED"
    assert "offline" in hosts["nobody-home"]["error"]
    assert hosts[FLEET[3]]["status"] == "SUCCESS" and done["status"] == "ABNORMAL"


async def test_the_seed_example_request_is_accepted(coc: httpx.AsyncClient) -> None:
    declared = [{"param_name": "a", "param_value": "", "param_order": 1}]  # the example's
    script = await create_script(coc, "true", params=declared)
    response = await coc.post(f"/v1/job/scripts/{script}", json=EXAMPLE)
    assert response.status_code == 200, response.text
    execute_uuid = response.json()["data"]
    assert execute_uuid.startswith("SCT")
    done = await wait_done(coc, execute_uuid, timeout=15)
    assert done["statistics"]["failed"] == 1  # its agent_sn "agent_sn" has no agent


async def test_an_idempotency_key_makes_a_retry_return_the_same_execution(
    coc: httpx.AsyncClient,
) -> None:
    script = await create_script(coc, "echo once")
    key = {"X-Idempotency-Key": uuid.uuid4().hex}
    first = await execute(coc, script, [[FLEET[4]]], headers=key)
    again = await execute(coc, script, [[FLEET[4]]], headers=key)
    assert first == again
    await wait_done(coc, first)
    listed = (await ok(coc.get("/v1/job/script/orders", params={"limit": 100})))["data"]
    assert [o["execute_uuid"] for o in listed["data"]].count(first) == 1


def _limits() -> list[tuple[str, dict[str, Any]]]:
    hosts = [
        {"resource_id": f"r{i}", "agent_sn": f"sn{i}", "project_id": "p", "region_id": "r"}
        for i in range(11)
    ]
    param = {"timeout": 30, "success_rate": "100", "execute_user": "root"}
    one = [{"batch_index": 1, "rotation_strategy": "CONTINUE", "target_instances": hosts[:1]}]

    def body(param_change: dict[str, Any] | None = None, batches_: Any = None) -> dict[str, Any]:
        return {
            "execute_param": {**param, **(param_change or {})},
            "execute_batches": batches_ or one,
        }

    many = [
        {
            "batch_index": i,
            "rotation_strategy": "CONTINUE",
            "target_instances": [{**hosts[0], "agent_sn": f"b{i}h{j}"} for j in range(10)],
        }
        for i in range(1, 22)
    ]
    return [
        ("timeout", body({"timeout": 4})),
        ("timeout", body({"timeout": 1801})),
        ("success_rate", body({"success_rate": "0.5"})),
        ("success_rate", body({"success_rate": "100.1"})),
        ("success_rate", body({"success_rate": "99.95"})),
        ("execute_user", body({"execute_user": ""})),
        ("execute_user", body({"execute_user": "u" * 33})),
        (
            "script_params",
            body(
                {
                    "script_params": [
                        {"param_name": "a", "param_value": "1", "param_order": 1},
                        {"param_name": "a", "param_value": "2", "param_order": 2},
                    ]
                }
            ),
        ),
        (
            "script_params",
            body({"script_params": [{"param_name": "a", "param_value": "1", "param_order": 2}]}),
        ),
        (
            "script_params",
            body(
                {
                    "script_params": [
                        {"param_name": f"p{i}", "param_value": "", "param_order": i}
                        for i in range(1, 22)
                    ]
                }
            ),
        ),
        (
            "param_value",
            body(
                {
                    "script_params": [
                        {"param_name": "a", "param_value": "v" * 1025, "param_order": 1}
                    ]
                }
            ),
        ),
        ("target_instances", body(batches_=[{**one[0], "target_instances": hosts}])),
        ("target_instances", body(batches_=[{**one[0], "target_instances": []}])),
        ("batch_index", body(batches_=[{**one[0], "batch_index": 2}])),
        ("execute_batches", body(batches_=many)),  # 21 batches (20 × 10 is also the host limit)
        ("rotation_strategy", body(batches_=[{**one[0], "rotation_strategy": "STOP"}])),
        (
            "agent_sn",
            body(batches_=[{**one[0], "target_instances": [{**hosts[0], "agent_sn": "a" * 33}]}]),
        ),
        (
            "region_id",
            body(batches_=[{**one[0], "target_instances": [{**hosts[0], "region_id": ""}]}]),
        ),
        ("more than once", body(batches_=[{**one[0], "target_instances": [hosts[0], hosts[0]]}])),
    ]


@pytest.mark.parametrize(("named", "body"), _limits())
async def test_every_limit_violation_is_400_and_starts_nothing(
    coc: httpx.AsyncClient, named: str, body: dict[str, Any]
) -> None:
    script = await create_script(coc, "true")
    before = (await ok(coc.get("/v1/job/script/orders", params={"limit": 1})))["data"]["total"]
    response = await coc.post(f"/v1/job/scripts/{script}", json=body)
    error = assert_coc_error(response, 400, "COC.00040001")
    assert named.split()[0] in error["error_msg"] or named in error["error_msg"]
    after = (await ok(coc.get("/v1/job/script/orders", params={"limit": 1})))["data"]["total"]
    assert after == before


async def test_scripts_crud_and_errors(coc: httpx.AsyncClient) -> None:
    script = await create_script(coc, "echo hi")
    shown = (await ok(coc.get(f"/v1/job/scripts/{script}")))["data"]
    assert shown["content"] == "echo hi" and shown["type"] == "SHELL"
    assert (await coc.delete(f"/v1/job/scripts/{script}")).status_code == 200
    assert_coc_error(await coc.get(f"/v1/job/scripts/{script}"), 404, "COC.00040401")
    assert_coc_error(await coc.post(f"/v1/job/scripts/{script}", json=EXAMPLE), 404, "COC.00040401")
    assert_coc_error(await coc.get("/v1/job/script/orders/SCTnope"), 404, "COC.00040402")
    bad = await coc.post("/v1/job/scripts", json={"name": "x", "type": "BASIC", "content": "x"})
    assert_coc_error(bad, 400, "COC.00040001")
    no_token = await coc.get("/v1/job/scripts", headers={"X-Auth-Token": ""})
    assert_coc_error(no_token, 401, "COC.00040101")
    denied = await coc.get(
        "/v1/job/scripts", headers={"X-Auth-Token": token("domain-a", ["sms:*"])}
    )
    assert_coc_error(denied, 403, "COC.00040301")
    other = await coc.get(
        f"/v1/job/scripts/{await create_script(coc, 'true')}",
        headers={"X-Auth-Token": token("domain-b", ["coc:*"])},
    )
    assert_coc_error(other, 404, "COC.00040401")


async def test_operations_on_hosts_and_batches(coc: httpx.AsyncClient) -> None:
    script = await create_script(coc, "sleep 20")
    execute_uuid = await execute(coc, script, [FLEET[6:8], FLEET[8:9], FLEET[9:10]], timeout=60)
    await wait_status(coc, execute_uuid, "PROCESSING")
    assert (await operate(coc, execute_uuid, "SKIP_BATCH", batch_index=2)).status_code == 200
    assert_coc_error(
        await operate(coc, execute_uuid, "SKIP_BATCH", batch_index=1), 409, "COC.00040901"
    )
    assert_coc_error(await operate(coc, execute_uuid, "SKIP_BATCH"), 400, "COC.00040001")
    for instance_id in (1, 2):
        assert (
            await operate(coc, execute_uuid, "CANCEL_INSTANCE", instance_id=instance_id)
        ).status_code == 200
    await eventually(lambda: _batch_status(coc, execute_uuid, 2, "SKIPPED"))
    await eventually(lambda: _batch_status(coc, execute_uuid, 3, "PROCESSING"), timeout=15)
    first = await batch(coc, execute_uuid, 1)
    assert {h["status"] for h in first["instances"]} == {"CANCELED"}
    assert (await operate(coc, execute_uuid, "CANCEL_ORDER")).status_code == 200
    assert (await wait_done(coc, execute_uuid))["status"] == "CANCELED"


# -- ZStack ------------------------------------------------------------------------------

VM = f"vm-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="module")
async def vm_agent(system: System, amqp_url: str) -> AsyncIterator[str]:
    agent = system.add_agent("vm-agent-1", "--vm-uuid", VM, "--vm-name", "vm_1")
    agent.start()
    await consuming(amqp_url, ["vm-agent-1"])
    yield VM
    agent.stop()


def zstack(domain: str = "domain-a") -> dict[str, str]:
    return {"Authorization": f"OAuth {token(domain, ['zstack:*'])}"}


async def vm_exec(
    client: httpx.AsyncClient,
    command: str,
    timeout: int | None = None,
    vm: str = VM,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    params: dict[str, Any] = {"vmInstanceUuid": vm, "platform": "Linux", "command": command}
    if timeout:
        params["commandTimeout"] = timeout
    body = {"params": params, "systemTags": ["a"], "userTags": ["b"]}
    return await client.put(
        "/zstack/v1/vm-instances/commands/exec", json=body, headers=headers or zstack()
    )


async def test_zstack_command_answers_with_its_real_output(
    client: httpx.AsyncClient, vm_agent: str
) -> None:
    async def answered() -> httpx.Response | None:
        response = await vm_exec(client, "echo hello world; echo 1/0 is not a goodScript >&2")
        return response if response.status_code == 200 else None

    response = await eventually(answered, timeout=15)
    assert response.json() == {
        "success": True,
        "stream": "standardStream: hello world\n, errorStream: 1/0 is not a goodScript\n",
        "vmInstance": {"uuid": vm_agent, "name": "vm_1"},
        "error": None,
    }
    failed = (await vm_exec(client, "echo out; exit 3")).json()
    assert failed["success"] is False and failed["error"]["code"] == "VM.1003"
    assert failed["stream"].startswith("standardStream: out")


async def test_zstack_timeout_unknown_vm_and_auth(client: httpx.AsyncClient, vm_agent: str) -> None:
    timed_out = await vm_exec(client, "sleep 30", timeout=1)
    assert timed_out.status_code == 503
    assert timed_out.json()["error"]["code"] == "VM.1002"
    unknown = await vm_exec(client, "true", vm="no-such-vm")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "SYS.1006"
    other = await vm_exec(client, "true", headers=zstack("domain-b"))
    assert other.status_code == 404
    missing = await vm_exec(client, "true", headers={"Authorization": "Bearer x"})
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "ID.1001"
    bad = await client.put(
        "/zstack/v1/vm-instances/commands/exec", json={"params": {}}, headers=zstack()
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "SYS.1007"


async def test_an_agent_with_the_documented_permissions_reaches_its_own_queue_only(
    coc: httpx.AsyncClient, system: System, amqp_url: str
) -> None:
    sn = f"perm-{uuid.uuid4().hex[:6]}"
    user, own_url = await asyncio.to_thread(broker.agent_account, amqp_url, sn)
    agent = system.add_agent(sn, extra={"REHOST_AGENT_AMQP_URL": own_url})
    agent.start()
    try:
        await consuming(amqp_url, [sn])
        await _all_online(coc, [sn])
        script = await create_script(coc, "echo with my own account")
        execute_uuid = await execute(coc, script, [[sn]])
        await wait_done(coc, execute_uuid)
        [host] = (await batch(coc, execute_uuid, 1))["instances"]
        assert host["status"] == "SUCCESS" and host["stdout"] == "with my own account\n"
        connection = await aio_pika.connect_robust(own_url)
        async with connection:
            channel = await connection.channel()
            registry = await channel.declare_queue("rehost.registry", passive=True)
            with pytest.raises(ChannelAccessRefused):  # reading another service's queue
                await registry.get(fail=False)
            channel = await connection.channel(publisher_confirms=True)
            events = await channel.get_exchange("rehost.events", ensure=False)
            with pytest.raises(ChannelAccessRefused):  # an event that is not its own
                await events.publish(aio_pika.Message(b"{}"), routing_key="source.deleted")
    finally:
        agent.stop()
        await asyncio.to_thread(broker.rabbitmqctl, "delete_user", user)


@pytest.mark.parametrize("name", ["LD_PRELOAD", "PATH", "PYTHONPATH", "BASH_ENV", "IFS", "1x"])
async def test_a_parameter_naming_a_process_variable_is_refused_at_create_and_execute(
    coc: httpx.AsyncClient, name: str
) -> None:
    declared = [{"param_name": name, "param_value": "/tmp/evil.so", "param_order": 1}]
    body = {"name": "s", "type": "SHELL", "content": "true", "script_params": declared}
    refused = await coc.post("/v1/job/scripts", json=body)
    assert_coc_error(refused, 400, "COC.00040001")
    assert name in refused.json()["error_msg"]
    script = await create_script(coc, "true")
    response = await coc.post(
        f"/v1/job/scripts/{script}",
        json={
            "execute_param": {
                "timeout": 30,
                "success_rate": "100",
                "execute_user": "root",
                "script_params": declared,
            },
            "execute_batches": batches([[FLEET[0]]]),
        },
    )
    assert_coc_error(response, 400, "COC.00040001")


async def test_only_declared_parameters_are_accepted_and_sensitive_values_never_read_back(
    coc: httpx.AsyncClient,
) -> None:
    declared = [
        {"param_name": "user", "param_value": "", "param_order": 1},
        {"param_name": "secret", "param_value": "default-pw", "param_order": 2, "sensitive": True},
    ]
    script = await create_script(coc, 'echo "$user"; test "$secret" = hunter2', params=declared)
    shown = (await ok(coc.get(f"/v1/job/scripts/{script}")))["data"]
    assert "default-pw" not in json.dumps(shown)
    undeclared = await coc.post(
        f"/v1/job/scripts/{script}",
        json={
            "execute_param": {
                "timeout": 30,
                "success_rate": "100",
                "execute_user": "root",
                "script_params": [{"param_name": "other", "param_value": "x", "param_order": 1}],
            },
            "execute_batches": batches([[FLEET[0]]]),
        },
    )
    assert_coc_error(undeclared, 400, "COC.00040001")
    params = [
        {"param_name": "user", "param_value": "alice", "param_order": 1},
        {"param_name": "secret", "param_value": "hunter2", "param_order": 2},
    ]
    execute_uuid = await execute(coc, script, [[FLEET[0]]], params=params)
    await wait_done(coc, execute_uuid)
    [host] = (await batch(coc, execute_uuid, 1))["instances"]
    assert host["status"] == "SUCCESS" and host["stdout"] == "alice\n"  # it got the value
    for path in ("", "/batches", "/batches/1", "/statistics"):
        read = await ok(coc.get(f"/v1/job/script/orders/{execute_uuid}{path}"))
        assert "hunter2" not in json.dumps(read), path
    listed = await ok(coc.get("/v1/job/script/orders", params={"limit": 100}))
    assert "hunter2" not in json.dumps(listed)


async def test_a_run_sent_straight_to_an_agent_cannot_set_its_loader_variables(
    amqp_url: str, fleet: list[str], tmp_path: Path
) -> None:
    """Whoever can write to an agent's queue still cannot choose how its interpreter runs."""
    agent_sn = fleet[5]
    marker = tmp_path / "env"
    run = {
        "kind": "script",
        "run_id": f"forged.{uuid.uuid4().hex}.1",
        "content": f"env > {marker}",
        "params": [
            {"name": "LD_PRELOAD", "value": "/nonexistent/evil.so", "order": 1},
            {"name": "PATH", "value": "/tmp/evil", "order": 2},
            {"name": "BASH_ENV", "value": "/tmp/evil.sh", "order": 3},
            {"name": "plain", "value": "kept", "order": 4},
        ],
        "timeout": 10,
    }
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(run).encode()), routing_key=f"rehost.agent.{agent_sn}"
        )

    async def written() -> str | None:
        return marker.read_text() if marker.exists() and marker.stat().st_size else None

    env = dict(
        line.split("=", 1)
        for line in (await eventually(written, timeout=15)).splitlines()
        if "=" in line
    )
    assert "LD_PRELOAD" not in env and "BASH_ENV" not in env
    assert env["PATH"] != "/tmp/evil" and env["plain"] == "kept"


async def test_a_script_run_as_another_user_has_that_users_groups_only(
    coc: httpx.AsyncClient,
) -> None:
    script = await create_script(coc, "id -u; id -G")
    body = {
        "execute_param": {"timeout": 30, "success_rate": "100", "execute_user": "nobody"},
        "execute_batches": batches([[FLEET[6]]]),
    }
    execute_uuid = (await ok(coc.post(f"/v1/job/scripts/{script}", json=body)))["data"]
    await wait_done(coc, execute_uuid)
    [host] = (await batch(coc, execute_uuid, 1))["instances"]
    nobody = pwd.getpwnam("nobody")
    uid, groups = host["stdout"].splitlines()
    assert int(uid) == nobody.pw_uid
    assert {int(g) for g in groups.split()} == set(os.getgrouplist("nobody", nobody.pw_gid))
    assert 0 not in {int(g) for g in groups.split()}  # none of root's


async def test_idempotency_keys_of_two_tenants_never_collide(
    system: System, fleet: list[str]
) -> None:
    """Tenant `k` with key `a:b` and tenant `k:a` with key `b` start two executions."""
    tenant = f"idem-{uuid.uuid4().hex[:6]}"
    found = []
    for domain, key in ((tenant, "a:b"), (f"{tenant}:a", "b")):
        headers = {"X-Auth-Token": token(domain, ["coc:*"])}
        async with httpx.AsyncClient(
            base_url=system.gateway_url, timeout=30, headers=headers
        ) as http:
            script = await create_script(http, "true")
            found.append(
                await execute(http, script, [[fleet[7]]], headers={"X-Idempotency-Key": key})
            )
            assert (await order(http, found[-1]))["execute_uuid"] == found[-1]
    assert found[0] != found[1]

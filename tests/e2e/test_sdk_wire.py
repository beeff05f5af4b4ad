"""What an agent or a console that follows the public SMS and COC pages meets, through
the official SDKs (issue: wire fidelity): a migration driven start to finish with
progress reports, the overview, batch deletes, and COC batch paging."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from huaweicloudsdkcoc.v1 import model as coc
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdksms.v3 import model as sms

from tests.conftest import auth
from tests.e2e.helpers import eventually
from tests.e2e.test_scripts import FAIL_FIRST_FOUR, FLEET, fleet  # noqa: F401 (a fixture)
from tests.e2e.test_sdk_clients import (
    PROJECTS,
    _task_state,
    call,
    coc_client,
    server_body,
    sms_client,
)
from tests.support.integrator import event_tap
from tests.support.processes import System

SEED_RESULT = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "sms-command-result-example.json").read_text()
)


def speed(subtask: str, progress: int, **figures: Any) -> Any:
    return sms.UpdateTaskSpeedReq(subtask_name=subtask, progress=progress, **figures)


async def report(sdk: Any, server_id: str, command: str, result: str = "success") -> None:
    body = sms.CommandBody(command_name=command, result=result, result_detail={"msg": "ok"})
    await call(
        sdk.update_command_result, sms.UpdateCommandResultRequest(server_id=server_id, body=body)
    )


async def progress(sdk: Any, task_id: str, body: Any) -> None:
    await call(sdk.update_task_speed, sms.UpdateTaskSpeedRequest(task_id=task_id, body=body))


async def state(sdk: Any, server_id: str) -> str:
    return str((await call(sdk.show_server, sms.ShowServerRequest(source_id=server_id))).state)


async def new_task(sdk: Any, server_id: str) -> str:
    body = sms.PostTask(
        name=f"task-{uuid.uuid4().hex[:6]}",
        type="MIGRATE_FILE",
        os_type="LINUX",
        migration_ip="192.168.1.1",
        source_server=sms.SourceServerByTask(id=server_id),
        target_server=sms.TargetServerByTask(
            vm_id=f"vm-{uuid.uuid4().hex[:8]}", name="t", disks=[]
        ),
        region_name="r",
        region_id="r",
        project_name="p",
        project_id=PROJECTS[0],
    )
    return str((await call(sdk.create_task, sms.CreateTaskRequest(body=body))).id)


async def act(sdk: Any, task_id: str, operation: str) -> None:
    request = sms.UpdateTaskStatusRequest(
        task_id=task_id, body=sms.UpdateTaskStatusReq(operation=operation)
    )
    await call(sdk.update_task_status, request)


async def test_a_migration_from_register_to_finished_with_progress_through_the_sdk(
    system: System, amqp_url: str
) -> None:
    async with event_tap(amqp_url, "task.progress") as tap:
        task_id = await migrate(system)
        events = await tap.wait_for(4, aggregate_id=task_id)
    assert [
        (e["data"]["subtask_name"], e["data"]["progress"], e["data"]["accepted"]) for e in events
    ] == [
        ("MIGRATE_LINUX_FILE", 40, True),
        ("MIGRATE_LINUX_FILE", 100, True),
        ("SYNC_LINUX_FILE", 100, True),
        ("SYNC_LINUX_FILE", 50, False),
    ]
    assert "MIGRATE_SUCCESS" in events[-1]["data"]["refusal"]


async def migrate(system: System) -> str:
    """A migration start to finish, through the SDK, with its checks; the task's id."""
    sdk = sms_client(system)
    name = f"mig-{uuid.uuid4().hex[:8]}"
    server_id = (
        await call(sdk.register_server, sms.RegisterServerRequest(body=server_body(name)))
    ).id
    # The seed page's own example, verbatim, on a server just registered: a fact, 200.
    seed = sms.CommandBody(**SEED_RESULT)
    await call(
        sdk.update_command_result, sms.UpdateCommandResultRequest(server_id=server_id, body=seed)
    )
    assert await state(sdk, server_id) == "waiting"  # recorded, not applied

    task_id = await new_task(sdk, server_id)
    await act(sdk, task_id, "start")
    await report(sdk, server_id, "START")
    await report(sdk, server_id, "START")  # an HTTP retry after a timeout: 200, applied once
    assert await state(sdk, server_id) == "replicate"
    await progress(
        sdk,
        task_id,
        speed(
            "MIGRATE_LINUX_FILE",
            40,
            replicatesize=400,
            totalsize=1000,
            migrate_speed=12.5,
            compress_rate=1.5,
            remain_time=90,
            total_cpu_usage=35.0,
            agent_cpu_usage=4.0,
            total_mem_usage=2048.0,
            agent_mem_usage=64.0,
            total_disk_io=80.0,
            agent_disk_io=8.0,
            process_trace="copying /var",
            need_migration_test=False,
            agent_time="2026-12-02 10:00:00",
        ),
    )
    task = await call(sdk.show_task, sms.ShowTaskRequest(task_id=task_id))
    assert (task.state, task.migrate_speed, task.compress_rate, task.remain_seconds) == (
        "RUNNING",
        12.5,
        1.5,
        90,
    )
    assert (task.total_cpu_usage, task.agent_mem_usage, task.total_disk_io) == (35.0, 64.0, 80.0)
    [sub] = task.sub_tasks
    assert (sub.id, sub.name, sub.progress, sub.process_trace) == (
        1,
        "MIGRATE_LINUX_FILE",
        40,
        "copying /var",
    )
    assert sub.start_date and sub.end_date is None
    assert task.start_date and task.create_date <= task.start_date
    assert task.estimate_complete_time >= task.start_date + 90_000 - 1

    await progress(
        sdk, task_id, speed("MIGRATE_LINUX_FILE", 100, migrate_speed=20.0, remain_time=0)
    )
    await report(sdk, server_id, "SYNC")
    await eventually(lambda: _task_state(sdk, task_id, "SYNCING"))
    await progress(sdk, task_id, speed("SYNC_LINUX_FILE", 100, remain_time=0))
    await act(sdk, task_id, "cutover")
    await report(sdk, server_id, "SYNC")
    assert await state(sdk, server_id) == "finished"
    await eventually(lambda: _task_state(sdk, task_id, "MIGRATE_SUCCESS"))

    # After the end, a late report is answered 200 and changes nothing.
    before = await call(sdk.show_task, sms.ShowTaskRequest(task_id=task_id))
    await progress(sdk, task_id, speed("SYNC_LINUX_FILE", 50))
    task = await call(sdk.show_task, sms.ShowTaskRequest(task_id=task_id))
    assert task.state == "MIGRATE_SUCCESS" and task.sub_tasks == before.sub_tasks
    assert [(s.name, s.progress, bool(s.end_date)) for s in task.sub_tasks] == [
        ("MIGRATE_LINUX_FILE", 100, True),
        ("SYNC_LINUX_FILE", 100, True),
    ]
    assert task.finish_date and task.finish_date >= task.start_date
    listed = await call(sdk.list_tasks, sms.ListTasksRequest(source_server_id=server_id))
    assert listed.tasks[0].sub_tasks[0].name == "MIGRATE_LINUX_FILE"
    return task_id


@pytest.mark.parametrize(
    "figures",
    [
        {"progress": 101},
        {"progress": -1},
        {"total_cpu_usage": 150.0},
        {"migrate_speed": -2.0},
        {"replicatesize": 10, "totalsize": 5},
        {"subtask_name": ""},
    ],
    ids=repr,
)
async def test_an_out_of_range_progress_report_is_400_in_the_sms_shape(
    client: httpx.AsyncClient, figures: dict[str, Any]
) -> None:
    body = {"subtask_name": "MIGRATE_LINUX_FILE", "progress": 10, **figures}
    response = await client.put(f"/v3/tasks/{uuid.uuid4()}/progress", json=body, headers=auth())
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "SMS.1001"


async def test_a_progress_report_for_an_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    body = {"subtask_name": "MIGRATE_LINUX_FILE", "progress": 10}
    response = await client.put(f"/v3/tasks/{uuid.uuid4()}/progress", json=body, headers=auth())
    assert response.status_code == 404 and response.json()["error_code"] == "SMS.3001"


async def test_the_overview_counts_the_callers_servers_by_state(system: System) -> None:
    sdk = sms_client(system)
    before = await call(sdk.show_overview, sms.ShowOverviewRequest())
    server_id = (
        await call(
            sdk.register_server,
            sms.RegisterServerRequest(body=server_body(f"ov-{uuid.uuid4().hex[:6]}")),
        )
    ).id
    after = await call(sdk.show_overview, sms.ShowOverviewRequest())
    assert after.waiting == before.waiting + 1
    assert after.finished == before.finished and after.unconfigured == 0
    await call(sdk.delete_server, sms.DeleteServerRequest(source_id=server_id))
    assert (await call(sdk.show_overview, sms.ShowOverviewRequest())).waiting == before.waiting


async def test_batch_deletes_follow_the_single_delete_rules(system: System) -> None:
    sdk = sms_client(system)
    servers = [
        (
            await call(
                sdk.register_server,
                sms.RegisterServerRequest(body=server_body(f"bd-{uuid.uuid4().hex[:6]}")),
            )
        ).id
        for _ in range(3)
    ]
    owned = servers[2]
    task_id = await new_task(sdk, owned)
    # One server a task owns: refused with its error, and none of the others deleted.
    with pytest.raises(ClientRequestException) as refused:
        await call(sdk.delete_servers, sms.DeleteServersRequest(body=sms.DeleteIds(ids=servers)))
    assert refused.value.status_code == 409 and refused.value.error_code == "SMS.2004"
    assert await state(sdk, servers[0]) == "waiting"
    with pytest.raises(ClientRequestException) as unknown:
        await call(
            sdk.delete_tasks, sms.DeleteTasksRequest(body=sms.DeleteTasksReq(ids=[task_id, "nope"]))
        )
    assert unknown.value.status_code == 404 and unknown.value.error_code == "SMS.3001"
    await call(sdk.delete_tasks, sms.DeleteTasksRequest(body=sms.DeleteTasksReq(ids=[task_id])))
    await call(sdk.delete_servers, sms.DeleteServersRequest(body=sms.DeleteIds(ids=servers)))
    for server_id in servers:
        with pytest.raises(ClientRequestException) as gone:
            await state(sdk, server_id)
        assert gone.value.status_code == 404


async def test_list_filters_of_the_page(system: System, client: httpx.AsyncClient) -> None:
    sdk = sms_client(system)
    server_id = (
        await call(
            sdk.register_server,
            sms.RegisterServerRequest(body=server_body(f"lf-{uuid.uuid4().hex[:6]}")),
        )
    ).id
    by_id = await call(sdk.list_servers, sms.ListServersRequest(id=server_id))
    assert [s.id for s in by_id.source_servers] == [server_id] and by_id.count == 1
    both = await call(sdk.list_servers, sms.ListServersRequest(id=server_id, state="finished"))
    assert both.count == 0
    connected = await call(sdk.list_servers, sms.ListServersRequest(id=server_id, connected=True))
    assert connected.count == 1
    cycle = await client.get(
        "/v3/sources", params={"migration_cycle": "checking", "limit": 100}, headers=auth()
    )
    assert server_id not in {s["id"] for s in cycle.json()["source_servers"]}
    bad = await client.get("/v3/sources", params={"migration_cycle": "flying"}, headers=auth())
    assert bad.status_code == 400 and bad.json()["error_code"] == "SMS.1001"


async def test_a_batch_reads_as_the_coc_page_with_paging_and_status(
    system: System,
    fleet: list[str],  # noqa: F811
) -> None:
    sdk = coc_client(system)
    script = coc.AddScriptModel(
        name=f"pg-{uuid.uuid4().hex[:6]}", type="SHELL", content=FAIL_FIRST_FOUR, script_params=[]
    )
    script_uuid = (await call(sdk.create_script, coc.CreateScriptRequest(body=script))).data
    targets = [
        coc.ExecuteResourceInstance(
            resource_id=f"ecs-{sn}", agent_sn=sn, project_id=PROJECTS[0], region_id="r1"
        )
        for sn in FLEET[:10]
    ]
    body = coc.ScriptExecuteModel(
        execute_param=coc.ScriptExecuteParam(
            timeout=30, success_rate=100.0, execute_user="root", script_params=[]
        ),
        execute_batches=[
            coc.ExecuteInstancesBatchInfo(
                batch_index=1, target_instances=targets, rotation_strategy="PAUSE"
            ),
            coc.ExecuteInstancesBatchInfo(
                batch_index=2,
                target_instances=[
                    coc.ExecuteResourceInstance(
                        resource_id="ecs-x",
                        agent_sn=FLEET[10],
                        project_id=PROJECTS[0],
                        region_id="r1",
                    )
                ],
                rotation_strategy="CONTINUE",
            ),
        ],
    )
    execute_uuid = (
        await call(sdk.execute_script, coc.ExecuteScriptRequest(script_uuid=script_uuid, body=body))
    ).data

    async def paused() -> Any:
        info = await call(
            sdk.get_script_job_info, coc.GetScriptJobInfoRequest(execute_uuid=execute_uuid)
        )
        return info if info.data.status == "PAUSED" else None

    info = await eventually(paused, timeout=60)
    assert info.data.properties.current_execute_batch_index == 1  # it paused after batch 1
    assert isinstance(info.data.execute_costs, int | type(None))

    def page(**query: Any) -> Any:
        request = coc.GetScriptJobBatchRequest(execute_uuid=execute_uuid, batch_index=1, **query)
        return call(sdk.get_script_job_batch, request)

    whole = (await page()).data
    assert whole.total_instances == 10
    assert sorted({i.status for i in whole.execute_instances}) == ["ABNORMAL", "FINISHED"]
    abnormal = (await page(status="ABNORMAL")).data.execute_instances
    assert [i.id for i in abnormal] == [1, 2, 3, 4]
    first = (await page(limit=3)).data.execute_instances
    second = (await page(limit=3, marker=first[-1].id)).data.execute_instances
    assert [i.id for i in first] == [1, 2, 3] and [i.id for i in second] == [4, 5, 6]
    assert all(isinstance(i.execute_costs, int) and i.execute_costs < 30 for i in first)
    statistics = await call(
        sdk.get_script_job_statistics, coc.GetScriptJobStatisticsRequest(execute_uuid=execute_uuid)
    )
    counts = {s.instance_status: s.instance_count for s in statistics.data.execute_statistics}
    assert (
        counts == {"READY": 1, "ABNORMAL": 4, "FINISHED": 6}
        and statistics.data.total_instance == 11
    )
    listed = await call(sdk.list_script_jobs, coc.ListScriptJobsRequest(status="PAUSED", limit=100))
    assert execute_uuid in {o.execute_uuid for o in listed.data.data}
    operation = coc.OperateScriptJobRequest(
        execute_uuid=execute_uuid,
        body=coc.JobScriptOrderOperationBody(operation_type="CANCEL_ORDER"),
    )
    await call(sdk.operate_script_job, operation)
    canceled = await call(
        sdk.list_script_jobs, coc.ListScriptJobsRequest(status="CANCELED", limit=100)
    )
    assert execute_uuid in {o.execute_uuid for o in canceled.data.data}

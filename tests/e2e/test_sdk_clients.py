"""The official Huawei Cloud SDKs, unmodified, against Rehost: signed requests (issue: SDK)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from huaweicloudsdkcoc.v1 import CocClient
from huaweicloudsdkcoc.v1 import model as coc
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdksms.v3 import SmsClient
from huaweicloudsdksms.v3 import model as sms

from tests.conftest import ACCESS_KEYS, auth
from tests.e2e.helpers import eventually, ok
from tests.support.processes import System

T = TypeVar("T")
AK, SK, DOMAIN, PROJECTS, _ = ACCESS_KEYS[0]


def sms_client(system: System, ak: str = AK, sk: str = SK, project: str = PROJECTS[0]) -> Any:
    credentials = BasicCredentials(ak, sk, project)
    return (
        SmsClient.new_builder()
        .with_credentials(credentials)
        .with_endpoints([system.gateway_url])
        .build()
    )


def coc_client(system: System) -> Any:
    return (
        CocClient.new_builder()
        .with_credentials(BasicCredentials(AK, SK, PROJECTS[0]))
        .with_endpoints([system.gateway_url])
        .build()
    )


async def call(fn: Callable[..., T], *args: Any) -> T:
    """The SDKs are synchronous; run them off the event loop the services' tests share."""
    return await asyncio.to_thread(fn, *args)


def server_body(name: str) -> Any:
    return sms.PostSourceServerBody(
        name=name, hostname=name, ip="10.20.30.40", os_type="LINUX", os_version="UBUNTU_22_04"
    )


async def test_sms_calls_work_unmodified(system: System, client: httpx.AsyncClient) -> None:
    sdk = sms_client(system)
    name = f"sdk-{uuid.uuid4().hex[:8]}"
    server_id = (
        await call(sdk.register_server, sms.RegisterServerRequest(body=server_body(name)))
    ).id
    shown = await call(sdk.show_server, sms.ShowServerRequest(source_id=server_id))
    assert shown.name == name and shown.state == "waiting"
    listed = await call(sdk.list_servers, sms.ListServersRequest(name=name))
    assert listed.count == 1 and listed.source_servers[0].id == server_id
    assert (
        await call(sdk.show_command, sms.ShowCommandRequest(server_id=server_id))
    ).command_name == ""

    target = sms.TargetServerByTask(vm_id=f"vm-{uuid.uuid4().hex[:6]}", name="target", disks=[])
    task_body = sms.PostTask(
        name=f"task-{name}",
        type="MIGRATE_FILE",
        os_type="LINUX",
        migration_ip="192.168.1.1",
        source_server=sms.SourceServerByTask(id=server_id),
        target_server=target,
        region_name="r",
        region_id="r",
        project_name="p",
        project_id=PROJECTS[0],
    )
    task_id = (await call(sdk.create_task, sms.CreateTaskRequest(body=task_body))).id
    task = await call(sdk.show_task, sms.ShowTaskRequest(task_id=task_id))
    assert task.state == "READY" and task.target_server.vm_id == target.vm_id
    assert isinstance(task.create_date, int)
    tasks = await call(sdk.list_tasks, sms.ListTasksRequest(source_server_id=server_id))
    assert tasks.count == 1 and tasks.tasks[0].id == task_id

    start = sms.UpdateTaskStatusRequest(
        task_id=task_id, body=sms.UpdateTaskStatusReq(operation="start")
    )
    await call(sdk.update_task_status, start)
    command = await eventually(lambda: _command(sdk, server_id, "START"))
    assert command.command_name == "START"
    result = sms.CommandBody(command_name="START", result="success", result_detail='{"msg":"xxx"}')
    await call(
        sdk.update_command_result, sms.UpdateCommandResultRequest(server_id=server_id, body=result)
    )
    assert (
        await call(sdk.show_server, sms.ShowServerRequest(source_id=server_id))
    ).state == "replicate"

    # This SDK version has no UnlockTargetEcs (a "history" API): sign it with the SDK's signer.
    unlocked = await _send(_signed(system, "POST", f"/v3/tasks/{task_id}/unlock"))
    assert unlocked.status_code == 200 and unlocked.json() == {}
    stop = sms.UpdateTaskStatusRequest(
        task_id=task_id, body=sms.UpdateTaskStatusReq(operation="stop")
    )
    with pytest.raises(ClientRequestException) as fenced:  # unlocked: the task lost its lock
        await call(sdk.update_task_status, stop)
    assert fenced.value.status_code == 409 and fenced.value.error_code == "SMS.3005"
    await call(
        sdk.update_command_result,
        sms.UpdateCommandResultRequest(
            server_id=server_id,
            body=sms.CommandBody(command_name="START", result="fail", result_detail={"e": "x"}),
        ),
    )  # the server goes to error; the task fails and can be deleted
    await eventually(lambda: _task_state(sdk, task_id, "MIGRATE_FAIL"))
    await call(sdk.delete_task, sms.DeleteTaskRequest(task_id=task_id))
    await call(sdk.delete_server, sms.DeleteServerRequest(source_id=server_id))
    with pytest.raises(ClientRequestException) as gone:
        await call(sdk.show_server, sms.ShowServerRequest(source_id=server_id))
    assert gone.value.status_code == 404 and gone.value.error_code == "SMS.2001"


async def _command(sdk: Any, server_id: str, name: str) -> Any:
    command = await call(sdk.show_command, sms.ShowCommandRequest(server_id=server_id))
    return command if command.command_name == name else None


async def _task_state(sdk: Any, task_id: str, state: str) -> bool:
    return bool((await call(sdk.show_task, sms.ShowTaskRequest(task_id=task_id))).state == state)


async def test_coc_calls_work_unmodified(system: System) -> None:
    sdk = coc_client(system)
    script = coc.AddScriptModel(
        name=f"sdk-{uuid.uuid4().hex[:6]}",
        type="SHELL",
        content="echo from-sdk",
        description="d",
        properties=coc.ScriptPropertiesModel(risk_level="LOW", version="1.0.0"),
        script_params=[],
    )
    script_uuid = (await call(sdk.create_script, coc.CreateScriptRequest(body=script))).data
    target = coc.ExecuteResourceInstance(
        resource_id="ecs-1", agent_sn="sdk-no-agent", project_id=PROJECTS[0], region_id="r1"
    )
    body = coc.ScriptExecuteModel(
        execute_param=coc.ScriptExecuteParam(
            resourceful=False, timeout=60, success_rate=100.0, execute_user="root", script_params=[]
        ),
        execute_batches=[
            coc.ExecuteInstancesBatchInfo(
                batch_index=1, target_instances=[target], rotation_strategy="PAUSE"
            ),
            coc.ExecuteInstancesBatchInfo(
                batch_index=2,
                target_instances=[
                    target.__class__(
                        resource_id="ecs-2",
                        agent_sn="sdk-no-agent-2",
                        project_id=PROJECTS[0],
                        region_id="r1",
                    )
                ],
                rotation_strategy="CONTINUE",
            ),
        ],
    )
    request = coc.ExecuteScriptRequest(script_uuid=script_uuid, body=body)
    execute_uuid = (await call(sdk.execute_script, request)).data

    async def paused() -> Any:
        info = await call(
            sdk.get_script_job_info, coc.GetScriptJobInfoRequest(execute_uuid=execute_uuid)
        )
        return info if info.data.status == "PAUSED" else None

    info = await eventually(paused)
    assert info.data.execute_uuid == execute_uuid
    assert info.data.properties.script_uuid == script_uuid
    batches = await call(
        sdk.list_script_job_batches, coc.ListScriptJobBatchesRequest(execute_uuid=execute_uuid)
    )
    assert [b.batch_index for b in batches.data] == [1, 2]
    assert batches.data[0].total_instances == 1
    batch = await call(
        sdk.get_script_job_batch,
        coc.GetScriptJobBatchRequest(execute_uuid=execute_uuid, batch_index=1),
    )
    assert batch.data.execute_instances[0].status == "ABNORMAL"  # the COC page's name
    assert batch.data.execute_instances[0].target_instance.agent_sn == "sdk-no-agent"
    operation = coc.OperateScriptJobRequest(
        execute_uuid=execute_uuid,
        body=coc.JobScriptOrderOperationBody(operation_type="CANCEL_ORDER"),
    )
    assert (await call(sdk.operate_script_job, operation)).data


# -- refusals ---------------------------------------------------------------------------


def _signed(
    system: System,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    ak: str = AK,
    sk: str = SK,
    query: str = "",
    date: str | None = None,
    extra: dict[str, str] | None = None,
) -> httpx.Request:
    """A request signed by the SDK's own signer, to tamper with afterwards."""
    from huaweicloudsdkcore.auth.credentials import BasicCredentials as Credentials
    from huaweicloudsdkcore.sdk_request import SdkRequest
    from huaweicloudsdkcore.signer.signer import Signer

    host = system.gateway_url.removeprefix("http://")
    query_params = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    headers = {"Content-Type": "application/json", "X-Project-Id": PROJECTS[0]}
    if date:
        headers["X-Sdk-Date"] = date
    headers.update(extra or {})
    request = SdkRequest(
        method=method,
        schema="http",
        host=host,
        resource_path=path,
        query_params=query_params,
        header_params=headers,
        body=body,
    )
    Signer(Credentials(ak, sk, PROJECTS[0])).sign(request)
    url = f"{system.gateway_url}{path}" + (f"?{query}" if query else "")
    return httpx.Request(method, url, headers=dict(request.header_params), content=body)


async def _send(request: httpx.Request) -> httpx.Response:
    async with httpx.AsyncClient(timeout=15) as http:
        return await http.send(request)


def _code(response: httpx.Response) -> str:
    return str(response.json()["error_code"])


async def test_tampering_and_bad_keys_are_refused_and_change_nothing(
    system: System, client: httpx.AsyncClient
) -> None:
    name = f"tamper-{uuid.uuid4().hex[:6]}"
    body = json.dumps(
        {"name": name, "hostname": name, "ip": "10.1.1.1", "os_type": "LINUX", "os_version": "X"}
    ).encode()
    good = _signed(system, "POST", "/v3/sources", body)

    wrong_secret = _signed(system, "POST", "/v3/sources", body, sk="not-the-secret")
    assert (response := await _send(wrong_secret)).status_code == 401 and _code(
        response
    ) == "SMS.9007"

    tampered = httpx.Request(
        "POST", good.url, headers=good.headers, content=body.replace(b"10.1.1.1", b"10.6.6.6")
    )
    assert (response := await _send(tampered)).status_code == 401 and _code(response) == "SMS.9007"

    listing = _signed(system, "GET", "/v3/sources", query="limit=5&name=x")
    query_tampered = httpx.Request(
        "GET", str(listing.url).replace("name=x", "name=y"), headers=listing.headers
    )
    assert (response := await _send(query_tampered)).status_code == 401 and _code(
        response
    ) == "SMS.9007"
    assert (await _send(listing)).status_code == 200

    old = _signed(system, "POST", "/v3/sources", body, date="20200101T000000Z")
    assert (response := await _send(old)).status_code == 401 and _code(response) == "SMS.9008"

    disabled_ak, disabled_sk = ACCESS_KEYS[1][:2]
    disabled = _signed(system, "POST", "/v3/sources", body, ak=disabled_ak, sk=disabled_sk)
    assert (response := await _send(disabled)).status_code == 401 and _code(response) == "SMS.9006"

    unknown = _signed(system, "POST", "/v3/sources", body, ak="AKUNKNOWN00000000000")
    assert (response := await _send(unknown)).status_code == 401 and _code(response) == "SMS.9005"

    unsigned_host = httpx.Request(
        "POST",
        good.url,
        content=body,
        headers={k: v for k, v in good.headers.items() if k.lower() != "x-sdk-date"},
    )
    assert (response := await _send(unsigned_host)).status_code == 401 and _code(
        response
    ) == "SMS.9009"

    listed = await ok(client.get("/v3/sources", params={"name": name}, headers=auth()))
    assert listed["count"] == 0  # nothing that was refused changed anything
    assert (await _send(good)).status_code == 200
    assert (await ok(client.get("/v3/sources", params={"name": name}, headers=auth())))[
        "count"
    ] == 1


async def test_a_key_of_another_domain_sees_nothing_of_this_one(
    system: System, client: httpx.AsyncClient
) -> None:
    server_id = (
        await ok(
            client.post(
                "/v3/sources",
                json={
                    "name": "mine",
                    "hostname": f"mine-{uuid.uuid4().hex[:6]}",
                    "ip": "10.0.0.1",
                    "os_type": "LINUX",
                    "os_version": "X",
                },
                headers=auth("domain-a"),
            )
        )
    )["id"]
    ak, sk, _, projects, _ = ACCESS_KEYS[2]
    other = sms_client(system, ak, sk, projects[0])
    with pytest.raises(ClientRequestException) as hidden:
        await call(other.show_server, sms.ShowServerRequest(source_id=server_id))
    assert hidden.value.status_code == 404
    with pytest.raises(ClientRequestException) as deleting:
        await call(other.delete_server, sms.DeleteServerRequest(source_id=server_id))
    assert deleting.value.status_code == 404
    assert (
        await client.get(f"/v3/sources/{server_id}", headers=auth("domain-a"))
    ).status_code == 200
    wrong_project = sms_client(system, project="project-b")
    with pytest.raises(ClientRequestException) as forbidden:
        await call(wrong_project.list_servers, sms.ListServersRequest())
    assert forbidden.value.status_code == 403


async def test_keys_are_reloaded_when_the_file_changes(
    system: System, base_env: dict[str, str]
) -> None:
    keys = Path(base_env["REHOST_ACCESS_KEYS"])
    original = keys.read_text()
    ak, sk = "AKROTATED00000000009", "sk-rotated-secret"
    try:
        keys.write_text(
            original
            + json.dumps({"ak": ak, "sk": sk, "domain_id": "domain-a", "actions": ["sms:*"]})
            + "\n"
        )
        fresh = sms_client(system, ak, sk)
        listed = await eventually(lambda: _list_or_none(fresh), timeout=5)
        assert listed.count >= 0
    finally:
        keys.write_text(original)
    gone = sms_client(system, ak, sk)

    async def refused() -> bool:
        try:
            await call(gone.list_servers, sms.ListServersRequest())
        except ClientRequestException as exc:
            return exc.status_code == 401
        return False

    assert await eventually(refused, timeout=5)
    log = (system.workdir / "gateway.log").read_text()
    assert sk not in log and SK not in log


async def _list_or_none(sdk: Any) -> Any:
    try:
        return await call(sdk.list_servers, sms.ListServersRequest())
    except ClientRequestException:
        return None


async def test_an_idempotency_key_must_be_signed_with_the_request(system: System) -> None:
    """A captured signed execute cannot be replayed with another key to run it again."""
    path = f"/v1/job/scripts/{uuid.uuid4().hex}"
    body = json.dumps({"execute_param": {}, "execute_batches": []}).encode()
    unsigned = _signed(system, "POST", path, body)
    unsigned.headers["X-Idempotency-Key"] = "added-after-signing"
    refused = await _send(unsigned)
    assert refused.status_code == 401 and _code(refused) == "COC.00040108", refused.text
    assert "x-idempotency-key" in refused.json()["error_msg"]
    signed = _signed(system, "POST", path, body, extra={"X-Idempotency-Key": "signed"})
    assert (await _send(signed)).status_code == 400  # past authentication: the body is checked

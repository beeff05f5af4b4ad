"""COC routes: scripts, executing them on fleets in batches, and following executions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response

from shared.auth import Principal
from shared.contracts.errors import COC_ERRORS
from shared.contracts.scripts import (
    MAX_BATCHES,
    BatchPage,
    ExecuteCommand,
    ExecuteScript,
    ExecutionId,
    OrderOperation,
    OrderOperationCommand,
    OrderQuery,
    OrderRef,
    ScriptBody,
    ScriptId,
    ScriptPage,
    ScriptRef,
)

from .deps import RequesterDep, require
from .replies import ask

router = APIRouter(prefix="/v1/job", tags=["COC scripts"], responses=COC_ERRORS)
Uuid = Annotated[str, Path(min_length=1, max_length=64)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: COC_ERRORS[400] | {"description": "Not found"}}
Writer = Annotated[Principal, Depends(require("coc:script:create"))]
Reader = Annotated[Principal, Depends(require("coc:script:get"))]
Deleter = Annotated[Principal, Depends(require("coc:script:delete"))]
Executor = Annotated[Principal, Depends(require("coc:script:execute"))]
JobReader = Annotated[Principal, Depends(require("coc:script:getJob"))]
JobOperator = Annotated[Principal, Depends(require("coc:script:operateJob"))]


@router.post("/scripts", response_model=ScriptId, summary="Create a script")
async def create_script(body: ScriptBody, requester: RequesterDep, caller: Writer) -> Response:
    return await ask(requester, "coc.script.create", body.model_dump_json().encode(), caller)


@router.get("/scripts", summary="List scripts, newest first")
async def list_scripts(
    page: Annotated[ScriptPage, Query()], requester: RequesterDep, caller: Reader
) -> Response:
    return await ask(requester, "coc.script.list", page.model_dump_json().encode(), caller)


@router.get("/scripts/{script_uuid}", summary="Show a script", responses=NOT_FOUND)
async def show_script(script_uuid: Uuid, requester: RequesterDep, caller: Reader) -> Response:
    ref = ScriptRef(script_uuid=script_uuid).model_dump_json().encode()
    return await ask(requester, "coc.script.get", ref, caller)


@router.delete("/scripts/{script_uuid}", summary="Delete a script", responses=NOT_FOUND)
async def delete_script(script_uuid: Uuid, requester: RequesterDep, caller: Deleter) -> Response:
    ref = ScriptRef(script_uuid=script_uuid).model_dump_json().encode()
    return await ask(requester, "coc.script.delete", ref, caller)


@router.post(
    "/scripts/{script_uuid}",
    response_model=ExecutionId,
    summary="Execute a script on hosts in batches",
    description=(
        "As the COC ExecuteScript page. Send `X-Idempotency-Key` to make a retry (after a "
        "503, say) return the execution the first call started instead of starting another."
    ),
    responses=NOT_FOUND,
)
async def execute_script(
    script_uuid: Uuid,
    body: ExecuteScript,
    requester: RequesterDep,
    caller: Executor,
    x_idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> Response:
    command = ExecuteCommand(
        script_uuid=script_uuid, idempotency_key=x_idempotency_key, **body.model_dump()
    )
    return await ask(requester, "coc.script.execute", command.model_dump_json().encode(), caller)


@router.get("/script/orders", summary="List script executions, newest first")
async def list_orders(
    query: Annotated[OrderQuery, Query()], requester: RequesterDep, caller: JobReader
) -> Response:
    return await ask(requester, "coc.order.list", query.model_dump_json().encode(), caller)


def _order(execute_uuid: str, batch_index: int | None = None) -> bytes:
    return OrderRef(execute_uuid=execute_uuid, batch_index=batch_index).model_dump_json().encode()


@router.get(
    "/script/orders/{execute_uuid}",
    summary="An execution: status, counts, start and end times",
    responses=NOT_FOUND,
)
async def show_order(execute_uuid: Uuid, requester: RequesterDep, caller: JobReader) -> Response:
    return await ask(requester, "coc.order.get", _order(execute_uuid), caller)


@router.get(
    "/script/orders/{execute_uuid}/batches", summary="An execution's batches", responses=NOT_FOUND
)
async def list_batches(execute_uuid: Uuid, requester: RequesterDep, caller: JobReader) -> Response:
    return await ask(requester, "coc.order.batches", _order(execute_uuid), caller)


@router.get(
    "/script/orders/{execute_uuid}/batches/{batch_index}",
    summary="One batch: each host's status and output (paged by `limit` and `marker`)",
    responses=NOT_FOUND,
)
async def show_batch(
    execute_uuid: Uuid,
    batch_index: Annotated[int, Path(ge=1, le=MAX_BATCHES)],
    page: Annotated[BatchPage, Query()],
    requester: RequesterDep,
    caller: JobReader,
) -> Response:
    ref = OrderRef(execute_uuid=execute_uuid, batch_index=batch_index, **page.model_dump())
    return await ask(requester, "coc.order.batch", ref.model_dump_json().encode(), caller)


@router.get(
    "/script/orders/{execute_uuid}/statistics",
    summary="Hosts of an execution counted by status",
    responses=NOT_FOUND,
)
async def order_statistics(
    execute_uuid: Uuid, requester: RequesterDep, caller: JobReader
) -> Response:
    return await ask(requester, "coc.order.statistics", _order(execute_uuid), caller)


@router.put(
    "/script/orders/{execute_uuid}/operation",
    summary="Pause, continue or cancel an execution; skip a batch; cancel one host",
    responses={**NOT_FOUND, 409: COC_ERRORS[400] | {"description": "Not in this state"}},
)
async def operate_order(
    execute_uuid: Uuid, body: OrderOperation, requester: RequesterDep, caller: JobOperator
) -> Response:
    command = OrderOperationCommand(execute_uuid=execute_uuid, **body.model_dump())
    return await ask(requester, "coc.order.operate", command.model_dump_json().encode(), caller)

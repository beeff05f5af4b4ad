"""SMS migration-task routes: create, list, show, delete, act on, and unlock the target."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from shared.auth import Principal
from shared.contracts.errors import SMS_ERRORS
from shared.contracts.tasks import (
    DeleteTasks,
    ListTasks,
    TaskAction,
    TaskActionCommand,
    TaskBody,
    TaskId,
    TaskList,
    TaskProgress,
    TaskProgressCommand,
    TaskRef,
    TaskView,
)
from shared.envelope import Reply

from .deps import RequesterDep, Senders, SendersDep, require
from .replies import ask, respond

router = APIRouter(prefix="/v3/tasks", tags=["SMS migration tasks"], responses=SMS_ERRORS)
TaskIdPath = Annotated[str, Path(min_length=1, max_length=255)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: SMS_ERRORS[400] | {"description": "No such task in the caller's domain"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: SMS_ERRORS[400] | {"description": "Locked target, wrong state, or lost lock"}
}
Creator = Annotated[Principal, Depends(require("sms:task:create"))]
Reader = Annotated[Principal, Depends(require("sms:task:get"))]
Deleter = Annotated[Principal, Depends(require("sms:task:delete"))]
Operator = Annotated[Principal, Depends(require("sms:task:updateStatus"))]
Unlocker = Annotated[Principal, Depends(require("sms:server:unlock"))]
Reporter = Annotated[Principal, Depends(require("sms:server:updateTaskProgress"))]


def _ref(task_id: str) -> bytes:
    return TaskRef(task_id=task_id).model_dump_json().encode()


@router.post(
    "",
    response_model=TaskId,
    summary="Create a migration task for a registered source server",
    responses={**NOT_FOUND, **CONFLICT},
)
async def create_task(body: TaskBody, requester: RequesterDep, caller: Creator) -> Response:
    payload = body.model_dump_json(exclude_unset=True).encode()
    return await ask(requester, "sms.task.create", payload, caller)


@router.get("", response_model=TaskList, summary="List migration tasks, newest first")
async def list_tasks(
    query: Annotated[ListTasks, Query()], requester: RequesterDep, caller: Reader
) -> Response:
    payload = query.model_dump_json().encode()
    return respond(await requester.request("sms.task.list", payload, domain_id=caller.domain_id))


@router.get("/{task_id}", response_model=TaskView, summary="Show a task", responses=NOT_FOUND)
async def show_task(task_id: TaskIdPath, requester: RequesterDep, caller: Reader) -> Response:
    return respond(
        await requester.request("sms.task.get", _ref(task_id), domain_id=caller.domain_id)
    )


@router.post(
    "/delete",
    summary="Delete tasks in a batch (SMS DeleteTasks)",
    description=(
        "Each task follows the single-delete rules. All are checked first: when one of them "
        "may not be deleted (no such task, or it runs), the answer is its error and none is "
        "deleted. 200 `{}` when all are."
    ),
    responses={**NOT_FOUND, **CONFLICT},
)
async def delete_tasks(body: DeleteTasks, requester: RequesterDep, caller: Deleter) -> Response:
    return await ask(requester, "sms.task.delete_many", body.model_dump_json().encode(), caller)


@router.put(
    "/{task_id}/progress",
    summary="Report a task's migration progress and speed (SMS UpdateTaskSpeed)",
    description=(
        "Called by the agent. A report is a fact: a well-formed one for a task of the "
        "caller's tenant is answered 200 `{}`, always. While the task migrates (RUNNING, "
        "SYNCING) it sets the sub-task's progress and the task's speed, remaining time and "
        "usage figures; otherwise it is recorded as refused and changes nothing. Each report "
        "emits `task.progress`."
    ),
    responses=NOT_FOUND,
)
async def update_task_speed(
    task_id: TaskIdPath, body: TaskProgress, senders: SendersDep, caller: Reporter
) -> Response:
    return respond(await send_progress(senders, caller, task_id, body))


async def send_progress(
    senders: Senders, caller: Principal, task_id: str, body: TaskProgress
) -> Reply:
    """The report, as the route and the fast path (writes.py) send it."""
    command = TaskProgressCommand(task_id=task_id, **body.model_dump())
    return await senders.progress.send(caller.domain_id, task_id, command)


@router.delete(
    "/{task_id}",
    summary="Delete a task (not while it runs); releases its lock and its source server",
    description="200 `{}`, as the SMS page.",
    responses={**NOT_FOUND, **CONFLICT},
)
async def delete_task(task_id: TaskIdPath, requester: RequesterDep, caller: Deleter) -> Response:
    return await ask(requester, "sms.task.delete", _ref(task_id), caller)


@router.post(
    "/{task_id}/action",
    summary="Start, stop, restart, test or cut over a task (SMS UpdateTaskStatus)",
    description=(
        "`start`/`restart` lock the target server (409 `SMS.3002` naming the holder when "
        "another task has it). clone_test, network_check, skip, clear and migration_test are "
        "refused with 400 `SMS.3004`."
    ),
    responses={**NOT_FOUND, **CONFLICT},
)
async def update_task_status(
    task_id: TaskIdPath, body: TaskAction, requester: RequesterDep, caller: Operator
) -> Response:
    command = TaskActionCommand(task_id=task_id, **body.model_dump())
    return await ask(requester, "sms.task.action", command.model_dump_json().encode(), caller)


@router.post(
    "/{task_id}/unlock",
    summary="Unlock the target server of a task (SMS UnlockTargetEcs)",
    description="Idempotent: unlocking a task that holds no lock answers 200 and changes nothing.",
    responses=NOT_FOUND,
)
async def unlock_target_ecs(
    task_id: TaskIdPath, requester: RequesterDep, caller: Unlocker
) -> Response:
    return await ask(requester, "sms.task.unlock", _ref(task_id), caller)

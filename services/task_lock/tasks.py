"""The migration task's state machine, pure.

A task action moves the task (and, through the registry, its source server) and
queues the matching command for the source server's agent. The source server's
own state changes then finish what the action began: a stopped server aborts its
task, a finished one completes it, an error fails it. Tasks that end release
their target lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.aggregates import Decision, NewCommand, NewEvent, reject, visible
from shared.contracts.commands import EnqueueCommand
from shared.contracts.lifecycle import CommandName
from shared.contracts.tasks import (
    LockView,
    TaskBody,
    TaskProgressCommand,
    TaskProgressed,
    TaskState,
    TaskStateChanged,
    UnlockReason,
)
from shared.envelope import Reply
from shared.errors import SmsCode
from shared.store import Document

from .stored import LockSeen, SubTask, Task, stored, task_of

UNSUPPORTED = frozenset({"clone_test", "network_check", "skip", "clear", "migration_test"})
# States in which a task owns its target server's lock.
HOLDS_LOCK: frozenset[TaskState] = frozenset({"RUNNING", "SYNCING", "ABORTING"})
# States in which the agent migrates, and so reports progress.
MIGRATING: frozenset[TaskState] = frozenset({"RUNNING", "SYNCING"})
ENDED: frozenset[TaskState] = frozenset({"MIGRATE_SUCCESS", "MIGRATE_FAIL", "ABORT"})
# What a progress report sets on the task as it is (the ShowTask page's names).
REPORTED = (
    "migrate_speed",
    "compress_rate",
    "total_cpu_usage",
    "agent_cpu_usage",
    "total_mem_usage",
    "agent_mem_usage",
    "total_disk_io",
    "agent_disk_io",
    "need_migration_test",
    "replicatesize",
    "totalsize",
)


@dataclass(frozen=True)
class ActionStep:
    to: TaskState
    command: CommandName  # the agent command to queue
    acquires_lock: bool = False


@dataclass(frozen=True)
class ActionRefused:
    reason: str
    unsupported: bool = False


ACTIONS: dict[tuple[str, TaskState], ActionStep] = {
    ("start", "READY"): ActionStep("RUNNING", "START", acquires_lock=True),
    ("start", "ABORT"): ActionStep("RUNNING", "START", acquires_lock=True),
    ("start", "MIGRATE_FAIL"): ActionStep("RUNNING", "START", acquires_lock=True),
    ("restart", "ABORT"): ActionStep("RUNNING", "START", acquires_lock=True),
    ("restart", "MIGRATE_FAIL"): ActionStep("RUNNING", "START", acquires_lock=True),
    ("stop", "RUNNING"): ActionStep("ABORTING", "STOP"),
    ("stop", "SYNCING"): ActionStep("ABORTING", "STOP"),
    ("test", "SYNCING"): ActionStep("SYNCING", "SYNC"),
    ("cutover", "SYNCING"): ActionStep("SYNCING", "SYNC"),
}


@dataclass(frozen=True)
class SourceStep:
    to: TaskState
    releases: UnlockReason | None = None


# (the source server's new state, the task's state) -> the task's step
SOURCE_STATES: dict[tuple[str, TaskState], SourceStep] = {
    ("syncing", "RUNNING"): SourceStep("SYNCING"),
    ("stopped", "ABORTING"): SourceStep("ABORT", "task_aborted"),
    ("finished", "RUNNING"): SourceStep("MIGRATE_SUCCESS", "task_finished"),
    ("finished", "SYNCING"): SourceStep("MIGRATE_SUCCESS", "task_finished"),
    ("error", "RUNNING"): SourceStep("MIGRATE_FAIL", "task_failed"),
    ("error", "SYNCING"): SourceStep("MIGRATE_FAIL", "task_failed"),
    ("error", "ABORTING"): SourceStep("MIGRATE_FAIL", "task_failed"),
}


def plan(operation: str, state: TaskState) -> ActionStep | ActionRefused:
    if operation in UNSUPPORTED:
        return ActionRefused(f"operation {operation} is not supported by Rehost", unsupported=True)
    step = ACTIONS.get((operation, state))
    return step or ActionRefused(
        f"operation {operation} is not allowed for a task in state {state}"
    )


def refused_action(refused: ActionRefused, task_id: str) -> Decision:
    code = SmsCode.OPERATION_UNSUPPORTED if refused.unsupported else SmsCode.TASK_STATE_CONFLICT
    return reject(code, f"Migration task {task_id}: {refused.reason}.")


def follow_source(source_state: str, state: TaskState) -> SourceStep | None:
    """The task's step when its source server reaches `source_state`; None: no change."""
    return SOURCE_STATES.get((source_state, state))


def may_delete(state: TaskState) -> bool:
    return state not in HOLDS_LOCK


COLLECTION = "tasks"


def view(doc: Document, version: int | None = None) -> dict[str, Any]:
    return {**doc.data, "id": doc.id, "version": doc.version if version is None else version}


def not_found(task_id: str) -> Decision:
    return reject(SmsCode.TASK_NOT_FOUND, f"Migration task {task_id} does not exist.")


def create(
    current: Document | None, task_id: str, body: TaskBody, domain_id: str, now: datetime
) -> Decision:
    if current is not None:  # created by an earlier delivery of this very message
        return Decision(reply=Reply(status=200, body={"id": current.id}))
    stamp = now.astimezone(UTC).isoformat()
    data = {
        **body.model_dump(mode="json", exclude_none=True),
        "source_server_id": body.source_server.id,
        "state": "READY",
        "create_date": int(now.timestamp() * 1000),  # epoch ms, as SMS (and its SDKs) have it
        "updated_at": stamp,
        "lock": {"vm_id": body.target_server.vm_id, "held": False, "fencing_token": 0},
    }
    doc = Document(id=task_id, domain_id=domain_id, data=data, created_at=now.timestamp())
    return Decision(
        reply=Reply(status=200, body={"id": task_id}),
        doc=doc,
        events=(NewEvent("task.created", {"task": view(doc, 1)}),),
    )


def _moved(
    current: Document,
    to: TaskState,
    cause: str,
    now: datetime,
    lock: LockView,
) -> tuple[Document, tuple[NewEvent, ...]]:
    data = Task(**task_of(current))
    state = data["state"]
    data["state"], data["updated_at"] = to, now.astimezone(UTC).isoformat()
    data["lock"] = LockSeen(
        vm_id=lock.vm_id,
        held=lock.held,
        fencing_token=lock.fencing_token,
        locked_at=lock.locked_at,
    )
    if to == "RUNNING" and state != "RUNNING":  # a (re)start: a new run, new progress
        data["start_date"], data["finish_date"], data["sub_tasks"] = _ms(now), None, []
    elif to in ENDED and state not in ENDED:
        data["finish_date"] = _ms(now)
    doc = current.evolve(data=stored(data))
    if to == state:
        return doc, ()
    changed = TaskStateChanged.model_validate(
        {
            "task_id": current.id,
            "from": state,
            "to": to,
            "cause": cause,
            "version": current.version + 1,
        }
    )
    return doc, (NewEvent("task.state_changed", changed.model_dump(mode="json", by_alias=True)),)


def apply_action(
    current: Document, operation: str, step: ActionStep, lock: LockView, now: datetime
) -> Decision:
    """The task takes `step`; the agent's command goes out through the outbox with it."""
    doc, events = _moved(current, step.to, f"operation {operation}", now, lock)
    command = EnqueueCommand(
        server_id=task_of(current)["source_server_id"],
        command_name=step.command,
        command_param={"task_id": current.id, "fencing_token": lock.fencing_token},
        task_id=current.id,
        fencing_token=lock.fencing_token,
    )
    return Decision(
        reply=Reply(status=200, body={}),
        doc=doc,
        events=events,
        commands=(NewCommand("sms.command.enqueue", command.model_dump(mode="json")),),
    )


def apply_source_state(
    current: Document, step: SourceStep, source_state: str, now: datetime
) -> Decision:
    lock = LockView.model_validate(task_of(current)["lock"])
    if step.releases is not None:
        lock = lock.model_copy(update={"held": False})
    doc, events = _moved(current, step.to, f"source server {source_state}", now, lock)
    return Decision(reply=Reply(status=200, body={}), doc=doc, events=events)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def report_progress(
    current: Document | None, report: TaskProgressCommand, domain_id: str, now: datetime
) -> Decision:
    """An agent's progress report. A task that is not migrating takes none: the report is
    recorded as refused (with its event) and the task's state and figures stay."""
    existing = visible(current, domain_id)
    if existing is None:
        return not_found(report.task_id)
    state = task_of(existing)["state"]
    refusal = None if state in MIGRATING else f"the task is {state}, not migrating"
    data: dict[str, Any] = {**existing.data, "updated_at": now.astimezone(UTC).isoformat()}
    if refusal is None:
        data.update(_figures(task_of(existing), report, now))
    else:
        data["refused_progress"] = {
            "at": _ms(now),
            "reason": refusal,
            **report.model_dump(mode="json"),
        }
    event = TaskProgressed(
        task_id=existing.id,
        accepted=refusal is None,
        refusal=refusal,
        subtask_name=report.subtask_name,
        progress=report.progress,
        migrate_speed=report.migrate_speed,
        remain_seconds=report.remain_time,
        replicatesize=report.replicatesize,
        totalsize=report.totalsize,
        at=_ms(now),
    )
    return Decision(
        reply=Reply(status=200, body={}),
        doc=existing.evolve(data=data),
        events=(NewEvent("task.progress", event.model_dump(mode="json")),),
    )


def _figures(data: Task, report: TaskProgressCommand, now: datetime) -> dict[str, Any]:
    """The task's figures after `report`: the sub-task's progress, speeds and usage."""
    figures: dict[str, Any] = {
        name: value for name in REPORTED if (value := getattr(report, name)) is not None
    }
    if report.remain_time is not None:
        figures["remain_seconds"] = report.remain_time
        figures["estimate_complete_time"] = _ms(now) + report.remain_time * 1000
    sub_tasks = [SubTask(**t) for t in data.get("sub_tasks", [])]
    sub = next((t for t in sub_tasks if t["name"] == report.subtask_name), None)
    if sub is None:
        start = _ms(now)
        sub = SubTask(
            id=len(sub_tasks) + 1,
            name=report.subtask_name,
            progress=0,
            start_date=start,
            end_date=None,
        )
        sub_tasks.append(sub)
    sub["progress"] = report.progress
    sub["end_date"] = (sub["end_date"] or _ms(now)) if report.progress == 100 else None
    if report.process_trace is not None:
        sub["process_trace"] = report.process_trace
    if report.migrate_speed is not None:
        sub["migrate_speed"] = report.migrate_speed
    figures["sub_tasks"] = sub_tasks
    return figures


def delete(current: Document | None, task_id: str, domain_id: str) -> Decision:
    existing = visible(current, domain_id)
    if existing is None:
        return not_found(task_id)
    state = task_of(existing)["state"]
    if not may_delete(state):
        return reject(
            SmsCode.TASK_STATE_CONFLICT,
            f"Migration task {task_id} is {state}; stop it before deleting it.",
        )
    return Decision(
        reply=Reply(status=200, body={}),
        doc=existing.evolve(deleted=True),
        events=(NewEvent("task.deleted", {"task_id": task_id}),),
    )

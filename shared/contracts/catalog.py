"""Which model is the body of which routing key: the message contract integrators read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from shared.bulk import BulkRequest
from shared.contracts.commands import (
    CommandCompleted,
    CommandQueued,
    CommandResultView,
    EnqueueCommand,
    RecordResult,
    ReportResult,
    ServerCommandsQuery,
)
from shared.contracts.lifecycle import SourceStateChanged, TaskClaim, TransitionRequest
from shared.contracts.scripts import AgentBinding
from shared.contracts.sources import (
    DeleteSources,
    ListSources,
    SourceDeleted,
    SourceRegistered,
    SourceServerBody,
    SourceServerIds,
    SourceServerRef,
    SourceUpdated,
)
from shared.contracts.tasks import (
    DeleteTasks,
    ListTasks,
    TargetLocked,
    TargetUnlocked,
    TaskActionCommand,
    TaskBody,
    TaskProgressCommand,
    TaskProgressed,
    TaskRef,
    TaskStateChanged,
)
from shared.envelope import Event, Reply


class TaskCreated(BaseModel):
    task: dict[str, Any]


class TaskDeleted(BaseModel):
    task_id: str


class ResultRecorded(BaseModel):
    result: CommandResultView


class NoBody(BaseModel):
    """A query that needs nothing but the tenant in its header."""


COMMANDS: dict[str, type[BaseModel]] = {
    "sms.source.register": SourceServerBody,
    "sms.source.register_many": BulkRequest,
    "sms.source.delete": SourceServerRef,
    "sms.source.delete_many": DeleteSources,
    "sms.source.overview": NoBody,
    "sms.source.get": SourceServerRef,
    "sms.source.known": SourceServerIds,
    "sms.source.list": ListSources,
    "sms.source.transition": TransitionRequest,
    "sms.source.claim": TaskClaim,
    "sms.source.release": TaskClaim,
    "sms.source.report_result": ReportResult,
    "sms.source.report_result_many": BulkRequest,
    "sms.command.record_result": RecordResult,
    "sms.command.record_result_many": BulkRequest,
    "sms.command.enqueue": EnqueueCommand,
    "sms.command.next": ServerCommandsQuery,
    "sms.command.next_many": SourceServerIds,
    "sms.command.results": ServerCommandsQuery,
    "sms.task.create": TaskBody,
    "sms.task.action": TaskActionCommand,
    "sms.task.unlock": TaskRef,
    "sms.task.get": TaskRef,
    "sms.task.delete": TaskRef,
    "sms.task.delete_many": DeleteTasks,
    "sms.task.progress": TaskProgressCommand,
    "sms.task.progress_many": BulkRequest,
    "sms.task.list": ListTasks,
    "coc.agent.allow": AgentBinding,
}

EVENTS: dict[str, type[BaseModel]] = {
    "source.registered": SourceRegistered,
    "source.updated": SourceUpdated,
    "source.deleted": SourceDeleted,
    "source.state_changed": SourceStateChanged,
    "command.queued": CommandQueued,
    "command.completed": CommandCompleted,
    "command.result_recorded": ResultRecorded,
    "task.created": TaskCreated,
    "task.state_changed": TaskStateChanged,
    "task.target_locked": TargetLocked,
    "task.target_unlocked": TargetUnlocked,
    "task.deleted": TaskDeleted,
    "task.progress": TaskProgressed,
}


def json_schemas() -> dict[str, Any]:
    return {
        "envelope": {"event": Event.model_json_schema(), "reply": Reply.model_json_schema()},
        "commands": {key: model.model_json_schema() for key, model in COMMANDS.items()},
        "events": {key: model.model_json_schema() for key, model in EVENTS.items()},
    }

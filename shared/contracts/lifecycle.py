"""Moving a source server through its lifecycle: the `sms.source.transition` command and
the `source.state_changed` event. The registry applies every transition (it is the
one writer of the source server); command results and task actions ask it to."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from shared.contracts.sources import MigrationCycle, SourceState

CommandName = Literal["START", "STOP", "DELETE", "SYNC", "UPLOAD_LOG", "RSET_LOG_ACL"]
CommandResult = Literal["success", "fail"]
TaskOperation = Literal["start", "stop", "restart", "test", "cutover"]


class ResultCause(BaseModel):
    kind: Literal["command_result"] = "command_result"
    command_name: CommandName
    result: CommandResult
    reason: Annotated[str, Field(max_length=1024)] | None = None


class ActionCause(BaseModel):
    kind: Literal["task_action"] = "task_action"
    operation: TaskOperation
    task_id: str


Cause = Annotated[ResultCause | ActionCause, Field(discriminator="kind")]


class TransitionRequest(BaseModel):
    server_id: Annotated[str, Field(min_length=1, max_length=255)]
    cause: Cause


class TransitionReply(BaseModel):
    server_id: str
    state: SourceState
    migration_cycle: MigrationCycle | None
    changed: bool
    version: int


class SourceStateChanged(BaseModel):
    server_id: str
    from_: SourceState = Field(alias="from")
    to: SourceState
    migration_cycle: MigrationCycle | None
    cause: dict[str, Any]
    version: int
    at: str

    model_config = {"populate_by_name": True}


class TaskClaim(BaseModel):
    """`sms.source.claim` / `sms.source.release`: a task starts or stops owning a server."""

    server_id: Annotated[str, Field(min_length=1, max_length=255)]
    task_id: Annotated[str, Field(min_length=1, max_length=255)]

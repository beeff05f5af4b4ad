"""Agent commands and their results (SMS ShowCommand / UpdateCommandResult)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shared.contracts.lifecycle import CommandName, CommandResult
from shared.contracts.nesting import MAX_DEPTH, nests_deeper
from shared.contracts.paging import Limit, Offset
from shared.contracts.sources import MigrationCycle, SourceState
from shared.envelope import Reply

MAX_RESULT_DETAIL = 65_535
ServerId = Annotated[str, Field(min_length=1, max_length=36)]


class CommandResultBody(BaseModel):
    """`POST /v3/sources/{server_id}/command_result`, as the SMS UpdateCommandResult page."""

    model_config = ConfigDict(extra="ignore")

    command_name: CommandName = Field(
        description="START, STOP, DELETE, SYNC, UPLOAD_LOG or RSET_LOG_ACL"
    )
    result: CommandResult = Field(description="success or fail")
    result_detail: dict[str, Any] = Field(
        description=(
            "The result in JSON: an object (the page's HTTP example) or a JSON-encoded object "
            f"string (the page's SDK samples); at most {MAX_RESULT_DETAIL} characters as JSON"
        ),
        json_schema_extra={"anyOf": [{"type": "object"}, {"type": "string"}]},
    )

    @field_validator("result_detail", mode="before")
    @classmethod
    def _object_or_json_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if len(value) > MAX_RESULT_DETAIL:
                raise ValueError(f"result_detail is longer than {MAX_RESULT_DETAIL} characters")
            if nests_deeper(value):
                raise ValueError(f"result_detail nests deeper than {MAX_DEPTH} levels")
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ValueError("result_detail is a string but not JSON") from exc
        if not isinstance(value, dict):
            raise ValueError("result_detail must be a JSON object or a JSON-encoded object string")
        if len(json.dumps(value)) > MAX_RESULT_DETAIL:
            raise ValueError(f"result_detail is longer than {MAX_RESULT_DETAIL} characters as JSON")
        return value


class ReportResult(CommandResultBody):
    """`sms.source.report_result`: an agent's result, which the registry answers."""

    server_id: ServerId


class RecordResult(BaseModel):
    """`sms.command.record_result`: a result the registry has answered, with what the
    lifecycle made of it (its reply to the transition), for the history and the channel."""

    report: ReportResult
    outcome: Reply = Field(description="the transition's reply: 200 with the state, or a refusal")
    received_at: datetime
    trace_id: str = ""


class AgentCommand(BaseModel):
    """`GET /v3/sources/{server_id}/command`: the next command, or an empty one."""

    command_name: str = Field(description='START, STOP, SYNC, DELETE, …; "" when there is none')
    command_param: dict[str, Any] | None = None


class NextCommand(BaseModel):
    """A server's next command and the version of its channel (0 when nothing was ever
    queued), so that a read model keeps the newest it has seen."""

    server_id: str
    version: int
    next: AgentCommand


class NextCommandList(BaseModel):
    """`sms.command.next_many`'s reply: one entry for each asked server the tenant has."""

    commands: list[NextCommand]


class EnqueueCommand(BaseModel):
    """`sms.command.enqueue`: queue a command for the agent of a source server."""

    server_id: ServerId
    command_name: CommandName
    command_param: dict[str, Any] = Field(default_factory=dict)
    task_id: str | None = None
    fencing_token: int | None = None


class CommandQueued(EnqueueCommand):
    """`command.queued`: a command waits for the agent; `next` is what the agent is handed now
    (the head of its queue, which is this command only when nothing waited before it)."""

    queued_at: str
    next: AgentCommand


class CommandCompleted(BaseModel):
    """`command.completed`: a result arrived for the head command, which leaves the queue;
    `next` is what the agent is handed now ("" when nothing waits)."""

    server_id: str
    command_name: CommandName
    next: AgentCommand


class ServerCommandsQuery(BaseModel):
    """`sms.command.next` and `sms.command.results`."""

    server_id: ServerId
    limit: Limit = 50
    offset: Offset = 0


class CommandResultView(BaseModel):
    id: str
    server_id: str
    command_name: CommandName
    result: CommandResult
    result_detail: dict[str, Any]
    received_at: str
    trace_id: str
    accepted: bool = Field(description="false when the lifecycle refused the transition")
    refusal: str | None = None
    state: SourceState | None = Field(default=None, description="the server's state after it")
    migration_cycle: MigrationCycle | None = None


class CommandResultList(BaseModel):
    count: int
    command_results: list[CommandResultView]

"""SMS agent-command routes: the next command for an agent, its result, the result history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from shared.auth import Principal
from shared.contracts.commands import (
    AgentCommand,
    CommandResultBody,
    CommandResultList,
    ReportResult,
    ServerCommandsQuery,
)
from shared.contracts.errors import SMS_ERRORS
from shared.contracts.paging import Limit, Offset
from shared.envelope import Reply

from .deps import NextCommandsDep, RequesterDep, Senders, SendersDep, require
from .next_commands import NextCommands
from .polls import next_command_answer
from .replies import respond

router = APIRouter(prefix="/v3/sources", tags=["SMS agent commands"], responses=SMS_ERRORS)
ServerId = Annotated[str, Path(min_length=1, max_length=36)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: SMS_ERRORS[400] | {"description": "No such server in the caller's domain"}
}
Agent = Annotated[Principal, Depends(require("sms:server:showCommand"))]
Reporter = Annotated[Principal, Depends(require("sms:server:updateCommandResult"))]
Reader = Annotated[Principal, Depends(require("sms:server:queryServer"))]


@router.get(
    "/{server_id}/command",
    response_model=AgentCommand,
    summary="The next command for the agent of this server",
    description=(
        "Commands are delivered in order. The head command is answered again on every call "
        'until its result is reported. `command_name` is "" when there is none.'
    ),
    responses=NOT_FOUND,
)
async def show_command(server_id: ServerId, request: Request, caller: Agent) -> Response:
    status, body = await next_command_answer(request.app.state, server_id, caller.domain_id)
    return Response(body, status_code=status, media_type="application/json")


@router.post(
    "/{server_id}/command_result",
    summary="Report the result of a command",
    description=(
        "`result_detail` is accepted as a JSON object or as a JSON-encoded string. A report is "
        "a fact: a well-formed one on a server of the caller's tenant is recorded and "
        "answered 200 `{}`, always. Whether it moved the lifecycle is in the record "
        "(`accepted`, `refusal`) and in `command.result_recorded`; a report the lifecycle "
        "does not allow in the server's state (a retry of one already applied, say) changes "
        "nothing."
    ),
    responses=NOT_FOUND,
)
async def update_command_result(
    server_id: ServerId,
    body: CommandResultBody,
    senders: SendersDep,
    known: NextCommandsDep,
    caller: Reporter,
) -> Response:
    return respond(await send_result(senders, known, caller, server_id, body))


async def send_result(
    senders: Senders,
    known: NextCommands,
    caller: Principal,
    server_id: str,
    body: CommandResultBody,
) -> Reply:
    """The report, as the route and the fast path (writes.py) send it."""
    report = ReportResult(server_id=server_id, **body.model_dump())
    reply = await senders.results.send(caller.domain_id, server_id, report)
    if reply.status == 200:
        # The command it answers leaves the queue a hop later: this process does not hand
        # it out again meanwhile.
        known.answered(server_id, report.command_name)
    return reply


@router.get(
    "/{server_id}/command_results",
    response_model=CommandResultList,
    summary="The command results of a server, newest first (a Rehost extension)",
    description="Not part of the public SMS API: Rehost's history of reported results.",
    responses=NOT_FOUND,
)
async def list_command_results(
    server_id: ServerId,
    requester: RequesterDep,
    caller: Reader,
    limit: Annotated[Limit, Query()] = 50,
    offset: Annotated[Offset, Query()] = 0,
) -> Response:
    query = ServerCommandsQuery(server_id=server_id, limit=limit, offset=offset)
    reply = await requester.request(
        "sms.command.results", query.model_dump_json().encode(), domain_id=caller.domain_id
    )
    return respond(reply)

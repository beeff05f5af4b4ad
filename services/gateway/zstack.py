"""ZStack route: run a command inside a guest VM and answer with its output (synchronous)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from shared.auth import Principal
from shared.contracts.errors import ZSTACK_ERRORS
from shared.contracts.zstack import DEFAULT_COMMAND_TIMEOUT, VmCommand, VmCommandResult

from .deps import RequesterDep, require_oauth
from .replies import respond

router = APIRouter(prefix="/zstack/v1", tags=["ZStack VM instances"], responses=ZSTACK_ERRORS)
Operator = Annotated[Principal, Depends(require_oauth("zstack:vm:executeGuestVmCommand"))]


@router.put(
    "/vm-instances/commands/exec",
    response_model=VmCommandResult,
    summary="ExecuteGuestVmCommand",
    description=(
        "Runs `params.command` with /bin/sh inside the VM through its agent and answers when it "
        "has finished. A command that exits non-zero answers 200 with `success: false` and the "
        "error; an unknown VM 404, an offline agent or a command past `commandTimeout` 503."
    ),
)
async def execute_guest_vm_command(
    body: VmCommand, requester: RequesterDep, caller: Operator, request: Request
) -> Response:
    # The caller waits for the command itself, so the wait outlasts its timeout.
    grace = request.app.state.settings.run_grace
    seconds = (body.params.commandTimeout or DEFAULT_COMMAND_TIMEOUT) + grace + 5
    reply = await requester.request(
        "zstack.vm.exec",
        body.model_dump_json().encode(),
        domain_id=caller.domain_id,
        actor=caller.subject,
        timeout=max(seconds, requester.timeout),
    )
    return respond(reply)

"""ZStack guest-VM commands: synchronous for the caller, a run like any other for the agent.

The handler stores the run with the caller's reply-to address and dispatches it to the
VM's agent through the outbox, then lets the request's delivery go: nothing waits
while the command runs. Whichever replica records the agent's report (or the sweep that
finds the run past its deadline) answers the caller. Keyed by the message, a
redelivered request finds the run it already dispatched instead of running it twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.aggregates import Decision, NewCommand, NewEvent, refusal
from shared.contracts.scripts import AgentRun, RunFinished
from shared.contracts.zstack import (
    DEFAULT_COMMAND_TIMEOUT,
    VmCommand,
    VmCommandResult,
    VmInstanceRef,
)
from shared.envelope import Reply
from shared.errors import ApiError, ZstackCode
from shared.store import Document
from shared.topology import agent_queue

from .agents import refused
from .stored import VmRun, run_of, stored

PREFIX = "zs-"
COLLECTION = "vmruns"


def stream(stdout: str, stderr: str) -> str:
    return f"standardStream: {stdout}, errorStream: {stderr}"


def answer(data: VmRun) -> Reply:
    """The ZStack reply for a finished (or expired) run."""
    vm = VmInstanceRef(uuid=data["vm_uuid"], name=data.get("vm_name"))
    status = data["status"]
    if status in ("TIMEOUT", "PROCESSING"):
        return refusal(
            ZstackCode.COMMAND_TIMEOUT,
            f"The command did not finish within {data['timeout']}s on VM {data['vm_uuid']}.",
        )
    result = VmCommandResult(
        success=status == "SUCCESS",
        stream=stream(data.get("stdout", ""), data.get("stderr", "")),
        vmInstance=vm,
    )
    if status != "SUCCESS":
        error = ApiError(
            ZstackCode.COMMAND_FAILED,
            data.get("error") or f"The command exited with status {data.get('exit_code')}.",
        )
        result.error = error.body()["error"]
    return Reply(status=200, body=result.model_dump(mode="json"))


@dataclass(frozen=True)
class Caller:
    """Where the answer goes: the gateway's direct reply-to address for the request."""

    reply_to: str | None
    correlation_id: str | None


def dispatch(
    current: Document | None,
    run_id: str,
    agent: Document,
    command: VmCommand,
    caller: Caller,
    now: float,
    grace: float,
) -> Decision:
    """The run, stored with the caller to answer and sent to the VM's agent."""
    if current is not None:
        return Decision(reply=Reply(status=200))
    params = command.params
    timeout = params.commandTimeout or DEFAULT_COMMAND_TIMEOUT
    data = VmRun(
        run_id=run_id,
        agent_sn=agent.id,
        vm_uuid=params.vmInstanceUuid,
        vm_name=agent.data.get("vm_name"),
        timeout=timeout,
        deadline=now + timeout + grace,
        status="PROCESSING",
        reply_to=caller.reply_to,
        correlation_id=caller.correlation_id,
    )
    run = AgentRun(kind="command", run_id=run_id, content=params.command, timeout=timeout)
    started = {"run_id": run_id, "vm_uuid": params.vmInstanceUuid}
    return Decision(
        reply=Reply(status=200),
        doc=Document(id=run_id, domain_id=agent.domain_id, data=stored(data), created_at=now),
        events=(NewEvent("zstack.vm.command_started", started),),
        commands=(
            NewCommand(
                agent_queue(agent.id),
                run.model_dump(mode="json"),
                exchange="",
                expiration=timeout + grace,
            ),
        ),
    )


def why_not_sent(command: VmCommand, agent: Document | None, online: bool) -> Reply | None:
    """Why the command cannot be sent, or None when it can."""
    params = command.params
    if params.platform.lower() != "linux":
        return refusal(ZstackCode.INVALID_PARAMETER, f"platform {params.platform} is not supported")
    if agent is None:
        return refusal(ZstackCode.VM_NOT_FOUND, f"No agent serves VM {params.vmInstanceUuid}.")
    if not online:
        return refusal(
            ZstackCode.AGENT_OFFLINE, f"The agent of VM {params.vmInstanceUuid} is offline."
        )
    return None


def finish(current: Document | None, result: RunFinished, agent_sn: str) -> Decision:
    """The agent's report on a run it was sent; late or repeated reports change nothing."""
    if current is None or run_of(current)["agent_sn"] != agent_sn:
        raise refused("not_dispatched", f"run {result.run_id} was not sent to agent {agent_sn!r}")
    run = run_of(current)
    if run["status"] != "PROCESSING":
        return Decision(reply=Reply(status=200))
    data = VmRun(**run)
    data["status"], data["exit_code"], data["error"] = result.status, result.exit_code, result.error
    data["stdout"], data["stderr"] = result.stdout, result.stderr
    finished = {"run_id": result.run_id, "status": result.status}
    return Decision(
        reply=Reply(status=200),
        doc=current.evolve(data=stored(data)),
        events=(NewEvent("zstack.vm.command_finished", finished),),
    )


def expire(current: Document | None) -> Decision:
    if current is None or run_of(current)["status"] != "PROCESSING":
        return Decision(reply=Reply(status=200))
    timed_out = VmRun(**run_of(current))
    timed_out["status"] = "TIMEOUT"
    return Decision(reply=Reply(status=200), doc=current.evolve(data=stored(timed_out)))

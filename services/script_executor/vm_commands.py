"""ZStack guest-VM commands: synchronous for the caller, a run like any other for the agent.

The handler dispatches the command to the VM's agent through the outbox and waits
(polling the store, so any replica may record the agent's report) until the run
finishes or its deadline passes. Keyed by the message, a redelivered request waits
for the run it already dispatched instead of running the command twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from shared.aggregates import Decision, NewCommand, NewEvent, apply
from shared.config import Settings
from shared.contracts.scripts import AgentRun, RunFinished
from shared.contracts.zstack import (
    DEFAULT_COMMAND_TIMEOUT,
    VmCommand,
    VmCommandResult,
    VmInstanceRef,
)
from shared.envelope import Reply, derived_id
from shared.errors import ApiError, Code, ZstackCode
from shared.store import Document, Query, Store

PREFIX = "zs-"
COLLECTION = "vmruns"
AGENTS = "agents"
POLL = 0.05


def _error(code: Code, message: str) -> Reply:
    error = ApiError(code, message)
    return Reply(status=error.status, body=error.body())


def stream(stdout: str, stderr: str) -> str:
    return f"standardStream: {stdout}, errorStream: {stderr}"


def answer(data: dict[str, Any]) -> Reply:
    """The ZStack reply for a finished (or expired) run."""
    vm = VmInstanceRef(uuid=data["vm_uuid"], name=data.get("vm_name"))
    status = data["status"]
    if status in ("TIMEOUT", "PROCESSING"):
        return _error(
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


async def execute(
    store: Store, message_id: str, command: VmCommand, domain_id: str, settings: Settings
) -> Reply:
    params = command.params
    if params.platform.lower() != "linux":
        return _error(ZstackCode.INVALID_PARAMETER, f"platform {params.platform} is not supported")
    found = await store.find(
        AGENTS, Query(domain_id=domain_id, equals={"vm_uuid": params.vmInstanceUuid}, limit=1)
    )
    if not found.items:
        return _error(ZstackCode.VM_NOT_FOUND, f"No agent serves VM {params.vmInstanceUuid}.")
    agent = found.items[0]
    now = time.time()
    if agent.data.get("last_seen", 0) < now - settings.agent_offline_after:
        return _error(
            ZstackCode.AGENT_OFFLINE, f"The agent of VM {params.vmInstanceUuid} is offline."
        )
    run_id = PREFIX + derived_id(message_id, "vm")
    timeout = params.commandTimeout or DEFAULT_COMMAND_TIMEOUT
    deadline = now + timeout + settings.run_grace
    data = {
        "run_id": run_id,
        "agent_sn": agent.id,
        "vm_uuid": params.vmInstanceUuid,
        "vm_name": agent.data.get("vm_name"),
        "timeout": timeout,
        "deadline": deadline,
        "status": "PROCESSING",
    }
    run = AgentRun(kind="command", run_id=run_id, content=params.command, timeout=timeout)

    def decide(current: Document | None) -> Decision:
        if current is not None:
            return Decision(reply=Reply(status=200))
        doc = Document(id=run_id, domain_id=domain_id, data=data, created_at=now)
        return Decision(
            reply=Reply(status=200),
            doc=doc,
            events=(
                NewEvent(
                    "zstack.vm.command_started",
                    {"run_id": run_id, "vm_uuid": params.vmInstanceUuid},
                ),
            ),
            commands=(
                NewCommand(
                    f"rehost.agent.{agent.id}",
                    run.model_dump(mode="json"),
                    exchange="",
                    expiration=timeout + settings.run_grace,
                ),
            ),
        )

    await apply(store, COLLECTION, message_id, lambda: store.get(COLLECTION, run_id), decide)
    return await _wait(store, run_id)


async def _wait(store: Store, run_id: str) -> Reply:
    while True:
        doc = await store.get(COLLECTION, run_id)
        assert doc is not None
        if doc.data["status"] != "PROCESSING" or time.time() > doc.data["deadline"]:
            return answer(doc.data)
        await asyncio.sleep(POLL)


async def record(store: Store, message_id: str, result: RunFinished) -> None:
    def decide(current: Document | None) -> Decision:
        if current is None or current.data["status"] != "PROCESSING":
            return Decision(reply=Reply(status=200))
        data = {
            **current.data,
            **result.model_dump(include={"status", "exit_code", "stdout", "stderr", "error"}),
        }
        return Decision(
            reply=Reply(status=200),
            doc=current.evolve(data=data),
            events=(
                NewEvent(
                    "zstack.vm.command_finished", {"run_id": result.run_id, "status": result.status}
                ),
            ),
        )

    await apply(store, COLLECTION, message_id, lambda: store.get(COLLECTION, result.run_id), decide)


async def expire(store: Store, now: float) -> None:
    found = await store.find(COLLECTION, Query(equals={"status": "PROCESSING"}, limit=100))
    for doc in found.items:
        if doc.data["deadline"] < now:
            await apply(
                store,
                COLLECTION,
                f"expire:{doc.id}",
                lambda doc=doc: store.get(COLLECTION, doc.id),  # type: ignore[misc]
                lambda current: Decision(
                    reply=Reply(status=200),
                    doc=None
                    if current is None or current.data["status"] != "PROCESSING"
                    else current.evolve(data={**current.data, "status": "TIMEOUT"}),
                ),
            )

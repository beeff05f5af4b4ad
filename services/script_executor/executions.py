"""A script execution on a fleet, pure: batches one after another, the hosts of a batch
in parallel, the success rate judged after each batch.

Every function takes the execution's data and returns what changes: the new data,
the events to emit and the runs to send to agents (`Outcome`). Time and which agents
are online are passed in, so the rules run without a clock, a broker or a store.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, cast

from shared.contracts.scripts import (
    AgentRun,
    ExecuteScript,
    ExecutionStatus,
    HostStatus,
    RunFinished,
    RunParam,
)

from .stored import Batch, Execution, Host, Param

HOST_STATUSES = ("READY", "PROCESSING", "SUCCESS", "FAILED", "TIMEOUT", "CANCELED", "SKIPPED")
TERMINAL_HOST = frozenset({"SUCCESS", "FAILED", "TIMEOUT", "CANCELED", "SKIPPED"})
DONE = frozenset({"FINISHED", "CANCELED"})


@dataclass
class Outcome:
    data: Execution
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    runs: list[tuple[str, AgentRun]] = field(default_factory=list)  # (agent_sn, run)
    cancels: list[tuple[str, str]] = field(default_factory=list)  # (agent_sn, run_id)


@dataclass(frozen=True)
class Context:
    now: float
    online: frozenset[str]  # agent_sn of the agents that may run now
    grace: float

    def at(self, now: float) -> Context:
        """The same context at the moment of deciding, so times follow the order of changes."""
        return replace(self, now=now)


class OperationRefused(Exception):
    """The operation does not fit the execution's state."""


def run_id(execute_uuid: str, instance_id: int) -> str:
    return f"{execute_uuid}.{instance_id}"


def parse_run_id(value: str) -> tuple[str, int] | None:
    head, _, tail = value.rpartition(".")
    return (head, int(tail)) if head and tail.isdigit() else None


def dispatched_to(data: Execution, value: str) -> str | None:
    """The agent a run was sent to, or None when no host of the execution has that run."""
    host = _host_by_run(data, value)
    return None if host is None else str(host["agent_sn"])


def new_execution(
    execute_uuid: str,
    script: dict[str, Any],
    request: ExecuteScript,
    now: float,
    params: list[Param] | None = None,
) -> Execution:
    """`params`: the request's parameters as bound to the script's declarations
    (`scripts.bind_params`); by default, as the request gives them."""
    instance = 0
    batches: list[Batch] = []
    for batch in sorted(request.execute_batches, key=lambda b: b.batch_index):
        hosts: list[Host] = []
        for target in batch.target_instances:
            instance += 1
            hosts.append(
                Host(
                    instance_id=instance,
                    resource_id=target.resource_id,
                    agent_sn=target.agent_sn,
                    project_id=target.project_id,
                    region_id=target.region_id,
                    status="READY",
                )
            )
        batches.append(
            {
                "batch_index": batch.batch_index,
                "rotation_strategy": batch.rotation_strategy,
                "status": "READY",
                "hosts": hosts,
            }
        )
    param = request.execute_param
    return {
        "execute_uuid": execute_uuid,
        "script_uuid": script["script_uuid"],
        "script_name": script["name"],
        "script_type": script["type"],
        "content": script["content"],
        "timeout": param.timeout,
        "success_rate": str(param.success_rate),
        "execute_user": param.execute_user,
        "script_params": params
        if params is not None
        else [cast(Param, p.model_dump()) for p in param.script_params],
        "status": "PROCESSING",
        "pause_requested": False,
        "batches": batches,
        "created_at": now,
        "finished_at": None,
    }


def start(data: Execution, ctx: Context) -> Outcome:
    outcome = Outcome(copy.deepcopy(data))
    outcome.events.append(("script.execution.started", _summary(outcome.data)))
    _advance(outcome, ctx)
    return outcome


def host_finished(data: Execution, result: RunFinished, ctx: Context) -> Outcome:
    return hosts_finished(data, [result], ctx)


def hosts_finished(data: Execution, results: list[RunFinished], ctx: Context) -> Outcome:
    """Reports applied in order, as one change: the same outcome as one after another."""
    outcome = Outcome(copy.deepcopy(data))
    for result in results:
        host = _host_by_run(outcome.data, result.run_id)
        if host is None or host["status"] != "PROCESSING":
            continue  # late, duplicate or canceled: nothing changes
        _finish_host(outcome, host, result.status, ctx, result.exit_code, result.error)
        host["duration_ms"] = result.duration_ms
        _after_host(outcome, ctx)
    return outcome


def expire(data: Execution, ctx: Context) -> Outcome:
    """Hosts whose agent did not answer within timeout plus grace become TIMEOUT."""
    outcome = Outcome(copy.deepcopy(data))
    for host in _hosts(outcome.data):
        if host["status"] == "PROCESSING" and host.get("deadline", ctx.now) < ctx.now:
            _finish_host(outcome, host, "TIMEOUT", ctx, None, "the agent did not answer in time")
    _after_host(outcome, ctx)
    return outcome


def operate(
    data: Execution,
    operation: str,
    ctx: Context,
    batch_index: int | None = None,
    instance_id: int | None = None,
) -> Outcome:
    outcome = Outcome(copy.deepcopy(data))
    state = outcome.data["status"]
    if state in DONE:
        raise OperationRefused(f"the execution is already {state}")
    if operation == "PAUSE_ORDER":
        outcome.data["pause_requested"] = True
    elif operation == "CONTINUE_ORDER":
        outcome.data["pause_requested"] = False
        if state == "PAUSED":
            outcome.data["status"] = "PROCESSING"
            _advance(outcome, ctx)
    elif operation == "CANCEL_ORDER":
        for host in _hosts(outcome.data):
            if host["status"] not in TERMINAL_HOST:
                _cancel_host(outcome, host, ctx)
        for batch in outcome.data["batches"]:
            if batch["status"] in ("READY", "PROCESSING"):
                batch["status"] = "CANCELED"
        _end(outcome, "CANCELED", ctx)
    elif operation == "SKIP_BATCH":
        _skip_batch(outcome, batch_index)
    elif operation == "CANCEL_INSTANCE":
        found = [h for h in _hosts(outcome.data) if h["instance_id"] == instance_id]
        if not found:
            raise OperationRefused(f"there is no instance {instance_id}")
        host = found[0]
        if host["status"] in TERMINAL_HOST:
            raise OperationRefused(f"instance {instance_id} is already {host['status']}")
        _cancel_host(outcome, host, ctx)
        _after_host(outcome, ctx)
    return outcome


def statistics(data: Execution) -> dict[str, int]:
    return host_statistics(_hosts(data))


def host_statistics(hosts: Iterable[Host]) -> dict[str, int]:
    """How many hosts have each status (lower-case names), and the total."""
    counts = dict.fromkeys(HOST_STATUSES, 0)
    for host in hosts:
        counts[host["status"]] += 1
    return {"total": sum(counts.values()), **{k.lower(): v for k, v in counts.items()}}


# -- the rules behind them ---------------------------------------------------------


def _hosts(data: Execution) -> list[Host]:
    return [h for b in data["batches"] for h in b["hosts"]]


def _host_by_run(data: Execution, value: str) -> Host | None:
    return next((h for h in _hosts(data) if h.get("run_id") == value), None)


def _summary(data: Execution) -> dict[str, Any]:
    return {
        "execute_uuid": data["execute_uuid"],
        "script_uuid": data["script_uuid"],
        "status": data["status"],
        "statistics": statistics(data),
    }


def _finish_host(
    outcome: Outcome,
    host: Host,
    status: HostStatus,
    ctx: Context,
    exit_code: int | None,
    error: str | None,
) -> None:
    host["status"], host["exit_code"], host["error"] = status, exit_code, error
    host["finished_at"] = ctx.now
    outcome.events.append(
        (
            "script.host.finished",
            {
                "execute_uuid": outcome.data["execute_uuid"],
                "instance_id": host["instance_id"],
                "agent_sn": host["agent_sn"],
                "status": status,
                "exit_code": exit_code,
                "error": error,
            },
        )
    )


def _cancel_host(outcome: Outcome, host: Host, ctx: Context) -> None:
    if host["status"] == "PROCESSING":
        outcome.cancels.append((host["agent_sn"], host["run_id"]))
    _finish_host(outcome, host, "CANCELED", ctx, None, "canceled by an operator")


def _skip_batch(outcome: Outcome, batch_index: int | None) -> None:
    batch = next((b for b in outcome.data["batches"] if b["batch_index"] == batch_index), None)
    if batch is None:
        raise OperationRefused(f"there is no batch {batch_index}")
    if batch["status"] != "READY":
        raise OperationRefused(
            f"batch {batch_index} is {batch['status']}; only a batch not yet started is skipped"
        )
    batch["status"] = "SKIPPED"
    for host in batch["hosts"]:
        host["status"] = "SKIPPED"


def _current(data: Execution) -> Batch | None:
    return next((b for b in data["batches"] if b["status"] == "PROCESSING"), None)


def _after_host(outcome: Outcome, ctx: Context) -> None:
    """When the running batch has no host left running, judge it and go on (or pause)."""
    batch = _current(outcome.data)
    if batch is None or any(h["status"] not in TERMINAL_HOST for h in batch["hosts"]):
        return
    _close_batch(outcome, batch, ctx)
    _advance(outcome, ctx)


def _close_batch(outcome: Outcome, batch: Batch, ctx: Context) -> None:
    batch["status"] = "FINISHED"
    succeeded = sum(1 for h in batch["hosts"] if h["status"] == "SUCCESS")
    rate = Decimal(succeeded * 100) / Decimal(len(batch["hosts"]))
    below = rate < Decimal(outcome.data["success_rate"])
    batch["success_rate"] = str(rate.quantize(Decimal("0.1")))
    outcome.events.append(
        (
            "script.batch.finished",
            {
                "execute_uuid": outcome.data["execute_uuid"],
                "batch_index": batch["batch_index"],
                "success_rate": batch["success_rate"],
                "below_success_rate": below,
            },
        )
    )
    if below and batch["rotation_strategy"] == "PAUSE":
        outcome.data["pause_requested"] = True


def _advance(outcome: Outcome, ctx: Context) -> None:
    """Starts the next batch, pauses, or finishes; loops over batches that end at once."""
    data = outcome.data
    while data["status"] == "PROCESSING" and _current(data) is None:
        upcoming = next((b for b in data["batches"] if b["status"] == "READY"), None)
        if upcoming is None:
            _end(outcome, "FINISHED", ctx)
            return
        if data["pause_requested"]:
            data["status"] = "PAUSED"
            data["pause_requested"] = False
            outcome.events.append(("script.execution.paused", _summary(data)))
            return
        _dispatch(outcome, upcoming, ctx)
        if all(h["status"] in TERMINAL_HOST for h in upcoming["hosts"]):
            _close_batch(outcome, upcoming, ctx)


def _dispatch(outcome: Outcome, batch: Batch, ctx: Context) -> None:
    data = outcome.data
    batch["status"] = "PROCESSING"
    params = [
        RunParam(name=p["param_name"], value=p["param_value"], order=p["param_order"])
        for p in data["script_params"]
    ]
    for host in batch["hosts"]:
        if host["status"] != "READY":
            continue
        if host["agent_sn"] not in ctx.online:
            _finish_host(outcome, host, "FAILED", ctx, None, "the host's agent is offline")
            continue
        host["status"] = "PROCESSING"
        host["run_id"] = run_id(data["execute_uuid"], host["instance_id"])
        host["started_at"] = ctx.now
        host["deadline"] = ctx.now + data["timeout"] + ctx.grace
        run = AgentRun(
            kind="script",
            run_id=host["run_id"],
            script_type=data["script_type"],
            content=data["content"],
            params=params,
            timeout=data["timeout"],
            execute_user=data["execute_user"],
        )
        outcome.runs.append((host["agent_sn"], run))


def _end(outcome: Outcome, status: ExecutionStatus, ctx: Context) -> None:
    outcome.data["status"] = status
    outcome.data["finished_at"] = ctx.now
    outcome.events.append(("script.execution.finished", _summary(outcome.data)))

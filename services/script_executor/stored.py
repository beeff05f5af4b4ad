"""What the script-executor keeps, by shape: an execution with its batches and hosts, and a
guest-VM command's run. The stored JSON is these dictionaries as they are; `execution_of`
and `run_of` are where a stored document is read as one, `stored` where one is written."""

from __future__ import annotations

from typing import (
    Any,
    Literal,
    NotRequired,  # pydantic reads these on 3.11
    cast,
)

from typing_extensions import TypedDict

from shared.contracts.scripts import (
    BatchStatus,
    ExecutionStatus,
    HostStatus,
    RotationStrategy,
    ScriptType,
)
from shared.store import Document


class Host(TypedDict):
    instance_id: int
    resource_id: str
    agent_sn: str
    project_id: str
    region_id: str
    status: HostStatus
    run_id: NotRequired[str]
    started_at: NotRequired[float]
    deadline: NotRequired[float]
    finished_at: NotRequired[float]
    exit_code: NotRequired[int | None]
    error: NotRequired[str | None]
    duration_ms: NotRequired[int]


class Batch(TypedDict):
    batch_index: int
    rotation_strategy: RotationStrategy
    status: BatchStatus
    hosts: list[Host]
    success_rate: NotRequired[str]


class Param(TypedDict):
    param_name: str
    param_value: str
    param_order: int
    sensitive: NotRequired[bool]


class Execution(TypedDict):
    execute_uuid: str
    script_uuid: str
    script_name: str
    script_type: ScriptType
    content: str
    timeout: int
    success_rate: str
    execute_user: str
    script_params: list[Param]
    status: ExecutionStatus
    pause_requested: bool
    batches: list[Batch]
    created_at: float
    finished_at: float | None
    creator: NotRequired[str | None]


class VmRun(TypedDict):
    run_id: str
    agent_sn: str
    vm_uuid: str
    vm_name: str | None
    timeout: int
    deadline: float
    status: Literal["PROCESSING", "SUCCESS", "FAILED", "TIMEOUT", "CANCELED"]
    reply_to: str | None
    correlation_id: str | None
    exit_code: NotRequired[int | None]
    stdout: NotRequired[str]
    stderr: NotRequired[str]
    error: NotRequired[str | None]


class Agent(TypedDict, total=False):
    """An agent's binding (set by an operator, or its first heartbeat where trusted) and
    what its last heartbeat said; the tenant is the document's."""

    agent_sn: str
    vm_uuid: str | None
    account: str | None
    bound_by: Literal["operator", "first_use"]
    vm_name: str | None
    hostname: str
    running: int
    at: str
    last_seen: float


def agent_of(doc: Document) -> Agent:
    return cast(Agent, doc.data)


def execution_of(doc: Document) -> Execution:
    return cast(Execution, doc.data)


def run_of(doc: Document) -> VmRun:
    return cast(VmRun, doc.data)


def stored(value: Execution | VmRun) -> dict[str, Any]:
    return cast(dict[str, Any], value)

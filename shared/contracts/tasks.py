"""Migration tasks and target-server locks (SMS CreateTask, UpdateTaskStatus, UnlockTargetEcs…)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.paging import Limit, Offset
from shared.contracts.sources import OsType

Name = Annotated[str, Field(min_length=1, max_length=255)]
Text = Annotated[str, Field(max_length=255)]
TaskType = Literal["MIGRATE_FILE", "MIGRATE_BLOCK"]
TaskState = Literal[
    "READY",
    "RUNNING",
    "SYNCING",
    "MIGRATE_SUCCESS",
    "MIGRATE_FAIL",
    "ABORTING",
    "ABORT",
    "DELETING",
]
Operation = Literal[
    "start",
    "stop",
    "restart",
    "test",
    "cutover",
    "clone_test",
    "network_check",
    "skip",
    "clear",
    "migration_test",
]
UnlockReason = Literal[
    "explicit_unlock", "task_finished", "task_failed", "task_aborted", "task_deleted"
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TaskSourceServer(_Body):
    id: Name


class TaskTargetServer(_Body):
    vm_id: Name = Field(description="The target server's id; the lock is keyed on it")
    name: Name
    disks: list[dict[str, Any]] | None = Field(default=None, max_length=65535)
    volume_groups: list[dict[str, Any]] | None = Field(default=None, max_length=65535)


class TaskBody(_Body):
    """`POST /v3/tasks`."""

    name: Name
    type: TaskType
    os_type: OsType
    source_server: TaskSourceServer
    target_server: TaskTargetServer
    migration_ip: Name
    region_name: Text | None = None
    region_id: Text | None = None
    project_name: Text | None = None
    project_id: Text | None = None
    vm_template_id: Text | None = None
    use_public_ip: bool | None = None
    syncing: bool | None = None
    exist_server: bool | None = None
    start_target_server: bool | None = None
    speed_limit: Annotated[int, Field(ge=0, le=10000)] | None = None
    priority: Annotated[int, Field(ge=0, le=2)] | None = None


class TaskId(BaseModel):
    id: str


class TaskAction(_Body):
    """`POST /v3/tasks/{task_id}/action` (SMS UpdateTaskStatus)."""

    operation: Operation
    param: dict[str, Annotated[str, Field(max_length=255)]] | None = Field(
        default=None, max_length=20
    )


class TaskActionCommand(TaskAction):
    task_id: Name


class TaskRef(BaseModel):
    task_id: Name


class ListTasks(BaseModel):
    state: TaskState | None = None
    source_server_id: Text | None = None
    name: Text | None = None
    limit: Limit = 50
    offset: Offset = 0


class LockView(BaseModel):
    vm_id: str
    held: bool
    fencing_token: int
    locked_at: str | None = None


class TaskView(TaskBody):
    model_config = ConfigDict(extra="allow")

    id: str
    state: TaskState
    create_date: int = Field(description="epoch milliseconds")
    updated_at: str
    lock: LockView | None = None
    version: int


class TaskList(BaseModel):
    count: int
    tasks: list[TaskView]


class TargetLocked(BaseModel):
    task_id: str
    vm_id: str
    fencing_token: int


class TargetUnlocked(TargetLocked):
    reason: UnlockReason


class TaskStateChanged(BaseModel):
    task_id: str
    from_: TaskState = Field(alias="from")
    to: TaskState
    cause: str
    version: int

    model_config = ConfigDict(populate_by_name=True)

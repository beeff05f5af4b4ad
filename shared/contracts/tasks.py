"""Migration tasks and target-server locks (SMS CreateTask, UpdateTaskStatus, UnlockTargetEcs…)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.contracts.paging import INT_MAX, Limit, Offset
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


TaskId36 = Annotated[str, Field(min_length=1, max_length=36)]
Percent = Annotated[float, Field(ge=0, le=100)]
NonNegative = Annotated[float, Field(ge=0)]
Bytes = Annotated[int, Field(ge=0, le=2**63 - 1)]


class TaskProgress(_Body):
    """`PUT /v3/tasks/{task_id}/progress` (SMS UpdateTaskSpeed), as the agent reports it."""

    subtask_name: Annotated[str, Field(min_length=1, max_length=255)] = Field(
        description="CREATE_CLOUD_SERVER, SSL_CONFIG, MIGRATE_LINUX_FILE, SYNC_LINUX_BLOCK, …"
    )
    progress: Annotated[int, Field(ge=0, le=100)] = Field(description="percent of the sub-task")
    replicatesize: Bytes | None = Field(default=None, description="bytes replicated so far")
    totalsize: Bytes | None = Field(default=None, description="bytes to migrate in all")
    process_trace: Annotated[str, Field(max_length=2048)] | None = None
    migrate_speed: NonNegative | None = Field(default=None, description="Mbit/s")
    compress_rate: NonNegative | None = None
    remain_time: Annotated[int, Field(ge=0, le=INT_MAX)] | None = Field(
        default=None, description="seconds"
    )
    total_cpu_usage: Percent | None = None
    agent_cpu_usage: Percent | None = None
    total_mem_usage: NonNegative | None = Field(default=None, description="MB")
    agent_mem_usage: NonNegative | None = Field(default=None, description="MB")
    total_disk_io: NonNegative | None = Field(default=None, description="Mbit/s")
    agent_disk_io: NonNegative | None = Field(default=None, description="Mbit/s")
    need_migration_test: bool | None = None
    agent_time: Annotated[str, Field(max_length=255)] | None = None

    @model_validator(mode="after")
    def _sizes(self) -> TaskProgress:
        done, total = self.replicatesize, self.totalsize
        if done is not None and total is not None and done > total:
            raise ValueError("replicatesize may not exceed totalsize")
        return self


class TaskProgressCommand(TaskProgress):
    """`sms.task.progress`."""

    task_id: Text


class DeleteTasks(BaseModel):
    """`POST /v3/tasks/delete` (SMS DeleteTasks), and `sms.task.delete_many`."""

    ids: list[TaskId36] = Field(min_length=1, max_length=50)


class SubTaskView(BaseModel):
    id: int
    name: str
    progress: int
    start_date: int | None = Field(default=None, description="epoch milliseconds")
    end_date: int | None = Field(default=None, description="epoch milliseconds, at 100 %")
    process_trace: str | None = None
    migrate_speed: float | None = None


class TaskProgressed(BaseModel):
    """Event `task.progress`: one report, and whether it was taken."""

    task_id: str
    accepted: bool
    refusal: str | None = None
    subtask_name: str
    progress: int
    migrate_speed: float | None = None
    remain_seconds: int | None = None
    replicatesize: int | None = None
    totalsize: int | None = None
    at: int = Field(description="epoch milliseconds")


class TaskView(TaskBody):
    model_config = ConfigDict(extra="allow")

    id: str
    state: TaskState
    create_date: int = Field(description="epoch milliseconds")
    start_date: int | None = Field(default=None, description="epoch ms of the last start")
    finish_date: int | None = Field(default=None, description="epoch ms it ended")
    estimate_complete_time: int | None = Field(
        default=None, description="epoch ms, from the last report's remaining time"
    )
    migrate_speed: float | None = None
    compress_rate: float | None = None
    remain_seconds: int | None = None
    total_cpu_usage: float | None = None
    agent_cpu_usage: float | None = None
    total_mem_usage: float | None = None
    agent_mem_usage: float | None = None
    total_disk_io: float | None = None
    agent_disk_io: float | None = None
    need_migration_test: bool | None = None
    sub_tasks: list[SubTaskView] = Field(default_factory=list)
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

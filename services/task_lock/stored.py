"""What the task-lock service keeps, by shape: a migration task and a target's lock. The
stored JSON is these dictionaries as they are; `task_of` and `lock_of` are where a stored
document is read as one, `stored` where one is written."""

from __future__ import annotations

from typing import (
    Any,
    NotRequired,  # pydantic reads these on 3.11
    cast,
)

from typing_extensions import TypedDict

from shared.contracts.tasks import TaskState
from shared.store import Document


class TargetServer(TypedDict):
    vm_id: str
    name: str


class LockSeen(TypedDict):
    """The task's view of its target's lock, as of its last change."""

    vm_id: str
    held: bool
    fencing_token: int
    locked_at: NotRequired[str | None]


class SubTask(TypedDict):
    id: int
    name: str
    progress: int
    start_date: int
    end_date: int | None
    process_trace: NotRequired[str]
    migrate_speed: NotRequired[float]


class Task(TypedDict):
    """The `POST /v3/tasks` body as sent (only what Rehost reads is named here), and what
    Rehost keeps beside it."""

    name: str
    source_server: dict[str, Any]
    target_server: TargetServer
    source_server_id: str
    state: TaskState
    create_date: int
    updated_at: str
    lock: LockSeen
    start_date: NotRequired[int]
    finish_date: NotRequired[int | None]
    sub_tasks: NotRequired[list[SubTask]]
    refused_progress: NotRequired[dict[str, Any]]


class Lock(TypedDict):
    vm_id: str
    holder: str | None
    fencing_token: int
    locked_at: str
    released_at: NotRequired[str]


def task_of(doc: Document) -> Task:
    return cast(Task, doc.data)


def lock_of(doc: Document) -> Lock:
    return cast(Lock, doc.data)


def stored(value: Task | Lock) -> dict[str, Any]:
    return cast(dict[str, Any], value)

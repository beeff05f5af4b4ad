"""The task-lock process: `rehost task-lock`."""

from __future__ import annotations

from shared.service import ServiceDefinition

from . import locks, tasks
from .handlers import TaskLockHandlers

TASK_LOCK = ServiceDefinition(
    name="task-lock",
    bindings=("sms.task.*",),
    event_bindings=("source.state_changed",),
    collections={tasks.COLLECTION: ("state", "source_server_id"), locks.COLLECTION: ()},
    handlers=lambda store, requester, _settings: TaskLockHandlers(store, requester),
    health_port=lambda settings: settings.task_lock_health_port,
)

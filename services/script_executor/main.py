"""The script-executor process: `rehost script-executor`."""

from __future__ import annotations

from shared.errors import Family
from shared.service import ServiceDefinition

from . import scripts, vm_commands
from .agents import AGENTS_COLLECTION
from .handlers import ScriptExecutorHandlers
from .orders import EXECUTIONS, OUTPUTS


async def _expire(handlers: ScriptExecutorHandlers) -> None:
    await handlers.expire_overdue()


SCRIPT_EXECUTOR = ServiceDefinition(
    name="script-executor",
    bindings=("coc.script.*", "coc.order.*", "coc.agent.*", "zstack.vm.*"),
    event_bindings=("agent.*.heartbeat", "agent.*.finished"),
    collections={
        scripts.COLLECTION: (),
        EXECUTIONS: ("status",),
        vm_commands.COLLECTION: ("status",),
        OUTPUTS: (),
        AGENTS_COLLECTION: ("vm_uuid",),
    },
    handlers=ScriptExecutorHandlers,
    health_port=lambda settings: settings.script_executor_health_port,
    family=Family.COC,
    periodic=_expire,
)

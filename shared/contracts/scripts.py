"""Scripts and script executions on fleets (COC), and the agent's run protocol.

`ExecuteScript` follows the COC ExecuteScript page. The page's own example
sends `success_rate` as a string, omits `resourceful` and adds `agent_status`:
all three are accepted.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.contracts.paging import Limit, Offset

MAX_HOSTS = 200
MAX_BATCHES = 20
MAX_BATCH_HOSTS = 10
MAX_PARAMS = 20
MAX_OUTPUT = 1_048_576  # stdout and stderr together, the page's log limit

ScriptType = Literal["SHELL", "PYTHON"]
RotationStrategy = Literal["CONTINUE", "PAUSE"]
ExecutionStatus = Literal["READY", "PROCESSING", "PAUSED", "FINISHED", "CANCELED"]
HostStatus = Literal["READY", "PROCESSING", "SUCCESS", "FAILED", "TIMEOUT", "CANCELED", "SKIPPED"]
BatchStatus = Literal["READY", "PROCESSING", "FINISHED", "SKIPPED", "CANCELED"]
Operation = Literal[
    "PAUSE_ORDER", "CONTINUE_ORDER", "CANCEL_ORDER", "SKIP_BATCH", "CANCEL_INSTANCE"
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


# A parameter also reaches the script as an environment variable of its name, so a
# name must be one that cannot change how the interpreter or the loader runs.
PARAM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
RESERVED_NAMES = frozenset(
    {
        "PATH",
        "IFS",
        "ENV",
        "BASH_ENV",
        "SHELLOPTS",
        "BASHOPTS",
        "CDPATH",
        "GLOBIGNORE",
        "PS4",
        "PROMPT_COMMAND",
        "HOME",
        "SHELL",
        "TMPDIR",
        "LANG",
        "LANGUAGE",
        "TZ",
        "HOSTALIASES",
        "LOCALDOMAIN",
        "RES_OPTIONS",
        "NLSPATH",
        "GCONV_PATH",
        "MALLOC_CHECK_",
        "NODE_OPTIONS",
        "NODE_PATH",
        "RUBYOPT",
        "RUBYLIB",
        "JAVA_TOOL_OPTIONS",
        "CLASSPATH",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "USER",
        "LOGNAME",
    }
)
RESERVED_PREFIXES = ("LD_", "PYTHON", "PERL", "BASH_FUNC", "LC_", "DYLD_", "REHOST_", "SSL_")


def param_name_problem(name: str) -> str | None:
    """Why `name` may not name a script parameter, or None when it may."""
    if not PARAM_NAME.match(name):
        return "must start with a letter and hold only letters, digits and _ (64 at most)"
    # Environment names are case-sensitive: `path` is a variable of its own, `PATH` is not.
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        return "names an environment variable that changes how a process runs"
    return None


def _param_name(name: str) -> str:
    problem = param_name_problem(name)
    if problem is not None:
        raise ValueError(f"param_name {name!r} {problem}")
    return name


ParamName = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_param_name)]


class ScriptParameter(_Body):
    param_name: ParamName
    param_value: Annotated[str, Field(max_length=1024)] = ""
    param_description: Annotated[str, Field(max_length=256)] | None = None
    param_order: Annotated[int, Field(ge=1, le=MAX_PARAMS)]
    sensitive: bool = False


def _check_params(params: list[Any]) -> list[Any]:
    names = [p.param_name for p in params]
    if len(set(names)) != len(names):
        raise ValueError("param_name must be unique")
    orders = sorted(p.param_order for p in params)
    if orders != list(range(1, len(params) + 1)):
        raise ValueError("param_order must start from 1 and be consecutive")
    return params


class ScriptBody(_Body):
    """`POST /v1/job/scripts`."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    type: ScriptType
    content: Annotated[str, Field(min_length=1, max_length=102_400)]
    description: Annotated[str, Field(max_length=256)] | None = None
    properties: dict[str, Any] | None = Field(
        default=None, max_length=20, description="risk_level, version, reviewers, protocol"
    )
    script_params: list[ScriptParameter] = Field(default_factory=list, max_length=MAX_PARAMS)

    _params = field_validator("script_params")(_check_params)


class ScriptId(BaseModel):
    data: str


class ScriptView(ScriptBody):
    script_uuid: str
    created_at: str
    version: int


class ScriptList(BaseModel):
    data: list[ScriptView]
    total: int


class ScriptExecuteInputParam(_Body):
    param_name: ParamName
    param_value: Annotated[str, Field(max_length=1024)]
    param_order: Annotated[int, Field(ge=1, le=MAX_PARAMS)]


class ScriptExecuteParam(_Body):
    resourceful: bool | None = Field(
        default=None, description="Required by the table, omitted by the example"
    )
    timeout: Annotated[int, Field(ge=5, le=1800)]
    success_rate: Annotated[Decimal, Field(ge=1, le=100)] = Field(
        description="1–100, one decimal at most; a string (as the page's example sends) is accepted"
    )
    execute_user: Annotated[str, Field(min_length=1, max_length=32)]
    script_params: list[ScriptExecuteInputParam] = Field(
        default_factory=list, max_length=MAX_PARAMS
    )

    _params = field_validator("script_params")(_check_params)

    @field_validator("success_rate")
    @classmethod
    def _one_decimal(cls, value: Decimal) -> Decimal:
        if value != value.quantize(Decimal("0.1")):
            raise ValueError("success_rate may have one decimal place at most")
        return value


class ExecuteResourceInstance(_Body):
    resource_id: Annotated[str, Field(min_length=1, max_length=64)]
    agent_sn: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
    project_id: Annotated[str, Field(min_length=1, max_length=32)]
    region_id: Annotated[str, Field(min_length=1, max_length=32)]


class ExecuteInstancesBatchInfo(_Body):
    batch_index: Annotated[int, Field(ge=1, le=MAX_BATCHES)]
    target_instances: list[ExecuteResourceInstance] = Field(
        min_length=1, max_length=MAX_BATCH_HOSTS
    )
    rotation_strategy: RotationStrategy


class ExecuteScript(_Body):
    """`POST /v1/job/scripts/{script_uuid}`."""

    execute_param: ScriptExecuteParam
    execute_batches: list[ExecuteInstancesBatchInfo] = Field(min_length=1, max_length=MAX_BATCHES)

    @model_validator(mode="after")
    def _batches(self) -> ExecuteScript:
        indexes = sorted(b.batch_index for b in self.execute_batches)
        if indexes != list(range(1, len(indexes) + 1)):
            raise ValueError("execute_batches: batch_index must start from 1 and be consecutive")
        hosts = [i.agent_sn for b in self.execute_batches for i in b.target_instances]
        if len(hosts) > MAX_HOSTS:
            raise ValueError(f"execute_batches: at most {MAX_HOSTS} hosts in one execution")
        if len(set(hosts)) != len(hosts):
            raise ValueError("execute_batches: an agent_sn appears more than once")
        return self


class ExecuteCommand(ExecuteScript):
    """`coc.script.execute`."""

    script_uuid: str
    idempotency_key: Annotated[str, Field(max_length=128)] | None = None


class ExecutionId(BaseModel):
    data: str = Field(description="execute_uuid")


CocHostStatus = Literal["READY", "PROCESSING", "ABNORMAL", "CANCELED", "FINISHED"]
CocOrderStatus = Literal["READY", "PROCESSING", "ABNORMAL", "PAUSED", "CANCELED", "FINISHED"]


class BatchPage(BaseModel):
    """The query of `GET …/batches/{batch_index}` (COC GetScriptJobBatch)."""

    status: CocHostStatus | None = Field(default=None, description="only hosts of this status")
    limit: Annotated[int, Field(ge=1, le=50)] = 50
    marker: Annotated[int, Field(ge=0, le=MAX_HOSTS)] | None = Field(
        default=None, description="the last instance id of the previous page"
    )


class OrderRef(BatchPage):
    execute_uuid: Annotated[str, Field(min_length=1, max_length=64)]
    batch_index: Annotated[int, Field(ge=1, le=MAX_BATCHES)] | None = None


class OrderQuery(BaseModel):
    """The query of `GET /v1/job/script/orders` (COC ListScriptJobs), newest first."""

    limit: Limit = 50
    marker: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="the order_id of the last order of the previous page"
    )
    offset: Offset = Field(default=0, description="Rehost's: skip this many (instead of marker)")
    start_time: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="created at or after, epoch ms"
    )
    end_time: Annotated[int, Field(ge=0)] | None = Field(
        default=None, description="created at or before, epoch ms"
    )
    creator: Annotated[str, Field(max_length=255)] | None = None
    status: CocOrderStatus | None = None


class OrderOperation(_Body):
    """`PUT /v1/job/script/orders/{execute_uuid}/operation`."""

    operation_type: Operation
    batch_index: Annotated[int, Field(ge=1, le=MAX_BATCHES)] | None = None
    instance_id: Annotated[int, Field(ge=1, le=MAX_HOSTS)] | None = None

    @model_validator(mode="after")
    def _target(self) -> OrderOperation:
        if self.operation_type == "SKIP_BATCH" and self.batch_index is None:
            raise ValueError("batch_index is required for SKIP_BATCH")
        if self.operation_type == "CANCEL_INSTANCE" and self.instance_id is None:
            raise ValueError("instance_id is required for CANCEL_INSTANCE")
        return self


class OrderOperationCommand(OrderOperation):
    execute_uuid: Annotated[str, Field(min_length=1, max_length=64)]


class ScriptRef(BaseModel):
    script_uuid: Annotated[str, Field(min_length=1, max_length=64)]


class ScriptPage(BaseModel):
    """The query of `GET /v1/job/scripts`."""

    limit: Limit = 50
    offset: Offset = 0


# The agent's side: what it is sent and what it reports.


class RunParam(BaseModel):
    name: str
    value: str
    order: int


class AgentRun(BaseModel):
    """Sent to `rehost.agent.<agent_sn>`: run a script or a command, or cancel a run."""

    kind: Literal["script", "command", "cancel"]
    run_id: str
    script_type: ScriptType = "SHELL"
    content: str = ""
    params: list[RunParam] = Field(default_factory=list)
    timeout: float = 60
    execute_user: str | None = None


RunStatus = Literal["SUCCESS", "FAILED", "TIMEOUT", "CANCELED"]


class RunFinished(BaseModel):
    """Event `agent.<sn>.finished`: what a run did."""

    run_id: str
    agent_sn: str
    status: RunStatus
    exit_code: int | None
    duration_ms: int
    stdout: str
    stderr: str
    dropped_bytes: int = 0
    error: str | None = None


class Heartbeat(BaseModel):
    """Event `agent.<sn>.heartbeat`."""

    agent_sn: str
    vm_uuid: str | None = None
    vm_name: str | None = None
    hostname: str
    running: int
    at: str


class AgentBinding(BaseModel):
    """`coc.agent.allow` (`rehost agents allow`): the tenant, VM and broker account an agent
    serves with, set by an operator."""

    agent_sn: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
    domain_id: Annotated[str, Field(min_length=1, max_length=64)]
    vm_uuid: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    account: Annotated[str, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="its RabbitMQ user; when set, its events must carry it as user_id"
    )

"""ZStack ExecuteGuestVmCommand (`PUT /zstack/v1/vm-instances/commands/exec`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

Tag = Annotated[str, Field(max_length=1024)]
DEFAULT_COMMAND_TIMEOUT = 60  # seconds, when the request names no commandTimeout


class VmCommandParams(BaseModel):
    model_config = ConfigDict(extra="ignore")

    vmInstanceUuid: Annotated[str, Field(min_length=1, max_length=64)]  # noqa: N815 - ZStack's name
    platform: Annotated[str, Field(min_length=1, max_length=32)]
    command: Annotated[str, Field(min_length=1, max_length=65_535)]
    commandTimeout: Annotated[int, Field(ge=1, le=86_400)] | None = Field(  # noqa: N815
        default=None, description=f"seconds; default {DEFAULT_COMMAND_TIMEOUT}"
    )


class VmCommand(BaseModel):
    model_config = ConfigDict(extra="ignore")

    params: VmCommandParams
    systemTags: list[Tag] | None = Field(default=None, max_length=100)  # noqa: N815
    userTags: list[Tag] | None = Field(default=None, max_length=100)  # noqa: N815


class VmInstanceRef(BaseModel):
    uuid: str
    name: str | None = None


class VmCommandResult(BaseModel):
    success: bool
    stream: str = Field(description="`standardStream: <stdout>, errorStream: <stderr>`")
    vmInstance: VmInstanceRef  # noqa: N815
    error: dict[str, Any] | None = None

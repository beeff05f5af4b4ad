"""Scripts (COC CreateScript and friends), pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from shared.aggregates import Decision, NewEvent, reject, visible
from shared.contracts.scripts import ScriptBody, ScriptExecuteInputParam
from shared.envelope import Reply
from shared.errors import ApiError, CocCode
from shared.store import Document

from .stored import Param

COLLECTION = "scripts"


def not_found(script_uuid: str) -> Reply:
    return reject(CocCode.SCRIPT_NOT_FOUND, f"Script {script_uuid} does not exist.").reply


MASK = "******"


def view(doc: Document) -> dict[str, Any]:
    """The script as reads answer it: the values of sensitive parameters are masked."""
    params = [masked(p) for p in doc.data.get("script_params", [])]
    return {**doc.data, "script_params": params, "script_uuid": doc.id, "version": doc.version}


def masked(param: Mapping[str, Any]) -> dict[str, Any]:
    return {**param, "param_value": MASK} if param.get("sensitive") else dict(param)


def bind_params(script: Document, given: list[ScriptExecuteInputParam]) -> list[Param]:
    """The execution's parameters: only names the script declares, each keeping whether
    it is sensitive. Raises ApiError (400) naming the first undeclared one."""
    declared = {p["param_name"]: p for p in script.data.get("script_params", [])}
    bound = []
    for param in given:
        if param.param_name not in declared:
            raise ApiError(
                CocCode.INVALID_PARAMETER,
                f"Invalid parameter script_params: {param.param_name!r} is not a parameter "
                f"of script {script.id}.",
            )
        sensitive = bool(declared[param.param_name].get("sensitive"))
        bound.append(
            Param(
                param_name=param.param_name,
                param_value=param.param_value,
                param_order=param.param_order,
                sensitive=sensitive,
            )
        )
    return bound


def create(
    current: Document | None, script_uuid: str, body: ScriptBody, domain_id: str, now: datetime
) -> Decision:
    if current is not None:
        return Decision(reply=Reply(status=200, body={"data": current.id}))
    data = {
        **body.model_dump(mode="json", exclude_none=True),
        "created_at": now.astimezone(UTC).isoformat(),
    }
    doc = Document(id=script_uuid, domain_id=domain_id, data=data, created_at=now.timestamp())
    return Decision(
        reply=Reply(status=200, body={"data": script_uuid}),
        doc=doc,
        events=(NewEvent("script.created", {"script_uuid": script_uuid, "name": body.name}),),
    )


def delete(current: Document | None, script_uuid: str, domain_id: str) -> Decision:
    existing = visible(current, domain_id)
    if existing is None:
        return Decision(reply=not_found(script_uuid))
    return Decision(
        reply=Reply(status=200, body={"data": script_uuid}),
        doc=existing.evolve(deleted=True),
        events=(NewEvent("script.deleted", {"script_uuid": script_uuid}),),
    )

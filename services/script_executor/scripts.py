"""Scripts (COC CreateScript and friends), pure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.aggregates import Decision, NewEvent
from shared.contracts.scripts import ScriptBody
from shared.envelope import Reply
from shared.errors import ApiError, CocCode, Code
from shared.store import Document

COLLECTION = "scripts"


def reject(code: Code, message: str) -> Decision:
    error = ApiError(code, message)
    return Decision(reply=Reply(status=error.status, body=error.body()))


def visible(doc: Document | None, domain_id: str) -> Document | None:
    if doc is None or doc.deleted or doc.domain_id != domain_id:
        return None
    return doc


def not_found(script_uuid: str) -> Reply:
    return reject(CocCode.SCRIPT_NOT_FOUND, f"Script {script_uuid} does not exist.").reply


def view(doc: Document) -> dict[str, Any]:
    return {**doc.data, "script_uuid": doc.id, "version": doc.version}


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

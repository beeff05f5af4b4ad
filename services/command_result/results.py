"""Command results, pure: each one recorded once, with its time, trace id and outcome."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from shared.aggregates import Decision, NewEvent
from shared.contracts.commands import CommandResultView, RecordResult
from shared.envelope import Reply
from shared.store import Document

COLLECTION = "results"


def record(
    current: Document | None, result_id: str, record: RecordResult, domain_id: str
) -> Decision:
    """Stores the result with its outcome: the registry's answer to the transition it asked for."""
    if current is not None:
        return Decision(reply=Reply(status=200, body={}))
    report, outcome = record.report, record.outcome
    accepted = outcome.status == 200
    body: dict[str, Any] = outcome.body if isinstance(outcome.body, dict) else {}
    view = CommandResultView(
        id=result_id,
        server_id=report.server_id,
        command_name=report.command_name,
        result=report.result,
        result_detail=report.result_detail,
        received_at=record.received_at.astimezone(UTC).isoformat(),
        trace_id=record.trace_id,
        accepted=accepted,
        refusal=None if accepted else body.get("error_msg"),
        state=body.get("state"),
        migration_cycle=body.get("migration_cycle"),
    ).model_dump(mode="json")
    created_at = record.received_at.timestamp()
    doc = Document(id=result_id, domain_id=domain_id, data=view, created_at=created_at)
    return Decision(
        reply=Reply(status=200, body={}),
        doc=doc,
        events=(NewEvent("command.result_recorded", {"result": view}),),
    )

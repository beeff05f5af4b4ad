"""Command results, pure: each one recorded once, with its time, trace id and outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.aggregates import Decision, NewEvent
from shared.contracts.commands import CommandResultView, ReportResult
from shared.envelope import Reply
from shared.store import Document

COLLECTION = "results"


def record(
    current: Document | None,
    result_id: str,
    report: ReportResult,
    domain_id: str,
    outcome: Reply,
    *,
    now: datetime,
    trace_id: str,
) -> Decision:
    """Stores the result; `outcome` is the registry's answer to the transition it asked for."""
    if current is not None:
        return Decision(reply=outcome)
    accepted = outcome.status == 200
    body: dict[str, Any] = outcome.body if isinstance(outcome.body, dict) else {}
    view = CommandResultView(
        id=result_id,
        server_id=report.server_id,
        command_name=report.command_name,
        result=report.result,
        result_detail=report.result_detail,
        received_at=now.astimezone(UTC).isoformat(),
        trace_id=trace_id,
        accepted=accepted,
        refusal=None if accepted else body.get("error_msg"),
        state=body.get("state"),
        migration_cycle=body.get("migration_cycle"),
    ).model_dump(mode="json")
    doc = Document(id=result_id, domain_id=domain_id, data=view, created_at=now.timestamp())
    return Decision(
        reply=outcome,
        doc=doc,
        events=(NewEvent("command.result_recorded", {"result": view}),),
    )

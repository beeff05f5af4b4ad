"""What the registry keeps of a source server, by shape: the register body as sent (only
the fields Rehost reads are named here) and the lifecycle Rehost keeps beside it.
`source_of` is where a stored document is read as one."""

from __future__ import annotations

from typing import Any, cast

from typing_extensions import TypedDict  # pydantic reads it on 3.11

from shared.contracts.sources import MigrationCycle, SourceState
from shared.store import Document


class Source(TypedDict, total=False):
    name: str
    hostname: str
    ip: str
    state: SourceState
    migration_cycle: MigrationCycle | None
    connected: bool
    task_id: str
    error: dict[str, Any]
    add_date: int
    created_at: str
    updated_at: str


def source_of(doc: Document) -> Source:
    return cast(Source, doc.data)

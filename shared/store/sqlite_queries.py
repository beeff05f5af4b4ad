"""The SQLite adapter's SQL, pure: the tables of a collection, the WHERE of a query, a row
and a document. Unit-tested (`tests/unit/test_sqlite_queries.py`); `sqlite.py` runs it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from shared import jsoncodec as json
from shared.store.base import APPLIED_MEMORY, AppliedMessage, AppliedMessages, Document, Query

NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
COLUMNS = "id, domain_id, key, version, deleted, created_at, updated_at, data, applied"


def schema(table: str) -> list[str]:
    # The outbox is a table of its own, written in the same transaction as the
    # document: publishing an event deletes a small row instead of rewriting the
    # document (a register's is ~7 KB) without the entry.
    return [
        f"""CREATE TABLE IF NOT EXISTS {table} (
            id TEXT PRIMARY KEY,
            domain_id TEXT NOT NULL,
            key TEXT UNIQUE,
            version INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            data TEXT NOT NULL,
            applied TEXT NOT NULL DEFAULT '[]'
        )""",
        f"CREATE INDEX IF NOT EXISTS {table}_by_domain ON {table} (domain_id, deleted, created_at)",
        f"""CREATE TABLE IF NOT EXISTS {table}_outbox (
            event_id TEXT PRIMARY KEY,
            doc_id TEXT NOT NULL,
            entry TEXT NOT NULL
        )""",
        # The relay reads a page's documents' entries by document (`pending`).
        f"CREATE INDEX IF NOT EXISTS {table}_outbox_by_doc ON {table}_outbox (doc_id)",
    ]


def path_of(url: str) -> str:
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return path or ":memory:"


def row_to_doc(row: Sequence[Any]) -> Document:
    doc_id, domain_id, key, version, deleted, created, updated, data, applied = row
    return Document(
        id=doc_id,
        domain_id=domain_id,
        key=key,
        version=version,
        deleted=bool(deleted),
        created_at=created,
        updated_at=updated,
        data=json.loads(data),
        applied=AppliedMessages(text=applied),
    )


def applied_json(previous: Iterable[dict[str, Any]], new: AppliedMessage | None) -> str:
    applied = list(previous)
    if new is not None:
        applied.append({"message_id": new.message_id, "reply": new.reply})
    return json.dumps(applied[-APPLIED_MEMORY:])


def field(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"bad field name {name!r}")
    return name


def where(query: Query) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if query.domain_id is not None:
        clauses.append("domain_id = ?")
        args.append(query.domain_id)
    if not query.include_deleted:
        clauses.append("deleted = 0")
    for name, value in query.equals.items():
        clauses.append(f"json_extract(data, '$.{field(name)}') = ?")
        args.append(value)
    for name, value in query.contains.items():
        clauses.append(f"instr(json_extract(data, '$.{field(name)}'), ?) > 0")
        args.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def field_index(table: str, name: str) -> tuple[str, list[str]]:
    """The name and the statements of the index on a field a query matches by equality.
    The tenant, `deleted` and the order follow the field in it: with the field alone the
    planner read a tenant's list through `{table}_by_domain` for its order and tested the
    field on every row of the tenant (a task-lock lookup per state event read them all)."""
    column = field(name).replace(".", "_")
    index = f"{table}_by_{column}"
    return index, [
        f"DROP INDEX IF EXISTS {table}_eq_{column}",  # the field-only index of earlier releases
        f"CREATE INDEX IF NOT EXISTS {index} ON {table} "
        f"(json_extract(data, '$.{name}'), domain_id, deleted, created_at)",
    ]

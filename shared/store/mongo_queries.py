"""Pure functions that build the MongoDB adapter's filters and updates.

They are unit-tested here; the adapter around them only sends them. Everything
uses what MongoDB guarantees without a replica set: single-document atomicity,
unique indexes and conditional updates.
"""

from __future__ import annotations

import re
from typing import Any

from shared.store.base import (
    APPLIED_MEMORY,
    AppliedMessage,
    AppliedMessages,
    Change,
    Document,
    Query,
)

INDEXES: list[tuple[list[tuple[str, int]], dict[str, Any]]] = [
    ([("key", 1)], {"unique": True, "partialFilterExpression": {"key": {"$type": "string"}}}),
    ([("domain_id", 1), ("deleted", 1), ("created_at", -1)], {}),
    ([("pending", 1)], {"partialFilterExpression": {"pending": True}}),
]


def field_indexes(name: str) -> list[list[tuple[str, int]]]:
    """The indexes of a field queries match on by equality: within a tenant (the lists:
    equalities first, then the list's order, so a page is read in order from the index
    instead of every match being sorted in memory), and across tenants (the sweeps)."""
    return [
        [("domain_id", 1), (f"data.{name}", 1), ("deleted", 1), *FIND_SORT],
        [(f"data.{name}", 1)],
    ]


def find_hint(query: Query) -> list[tuple[str, int]] | None:
    """The index a query is to use: a tenant's list that matches a field uses the tenant's
    index of its first field. Named, so that every server takes it (a planner may not
    pick one by itself for a conjunction: SecantusDB, the test server, does not)."""
    if query.domain_id is None or not query.equals:
        return None
    return field_indexes(next(iter(query.equals)))[0]


def _applied(applied: AppliedMessage | None) -> list[dict[str, Any]]:
    return [] if applied is None else [{"message_id": applied.message_id, "reply": applied.reply}]


def insert_document(change: Change, now: float) -> dict[str, Any]:
    doc = change.doc
    return {
        "_id": doc.id,
        "domain_id": doc.domain_id,
        "key": doc.key,
        "version": 1,
        "deleted": doc.deleted,
        "created_at": doc.created_at or now,
        "updated_at": now,
        "data": doc.data,
        "outbox": list(change.events),
        "pending": bool(change.events),
        "applied": _applied(change.applied),
    }


def update_filter(change: Change) -> dict[str, Any]:
    return {"_id": change.doc.id, "version": change.expected_version}


def update_spec(change: Change, now: float) -> dict[str, Any]:
    doc = change.doc
    spec: dict[str, Any] = {
        "$set": {
            "domain_id": doc.domain_id,
            "key": doc.key,
            "version": change.expected_version + 1,
            "deleted": doc.deleted,
            "updated_at": now,
            "data": doc.data,
        },
    }
    push: dict[str, Any] = {}
    if change.events:
        # $push, not $set: events the relay has not yet removed must stay.
        push["outbox"] = {"$each": list(change.events)}
        spec["$set"]["pending"] = True
    if change.applied is not None:
        push["applied"] = {"$each": _applied(change.applied), "$slice": -APPLIED_MEMORY}
    if push:
        spec["$push"] = push
    return spec


def find_filter(query: Query) -> dict[str, Any]:
    flt: dict[str, Any] = {}
    if query.domain_id is not None:
        flt["domain_id"] = query.domain_id
    if not query.include_deleted:
        flt["deleted"] = False
    for name, value in query.equals.items():
        flt[f"data.{name}"] = value
    for name, value in query.contains.items():
        flt[f"data.{name}"] = {"$regex": re.escape(value)}
    return flt


FIND_SORT = [("created_at", -1), ("_id", -1)]
OUTBOX_FILTER: dict[str, Any] = {"pending": True}


def mark_published_spec(event_ids: list[str]) -> list[dict[str, Any]]:
    """An update pipeline: drop the published events and recompute `pending` atomically."""
    left = {
        "$filter": {"input": "$outbox", "cond": {"$not": {"$in": ["$$this.event_id", event_ids]}}}
    }
    return [{"$set": {"outbox": left}}, {"$set": {"pending": {"$gt": [{"$size": "$outbox"}, 0]}}}]


def to_document(raw: dict[str, Any]) -> Document:
    return Document(
        id=raw["_id"],
        domain_id=raw["domain_id"],
        key=raw.get("key"),
        version=raw["version"],
        deleted=raw.get("deleted", False),
        created_at=raw.get("created_at", 0.0),
        updated_at=raw.get("updated_at", 0.0),
        data=raw.get("data", {}),
        applied=AppliedMessages(AppliedMessage(**a) for a in raw.get("applied", [])),
    )

"""Applying one command to one aggregate: load, decide (pure), save with outbox, reply.

This is the loop every handler runs. It gives each command its guarantees:
a message applied before returns the reply it got then (duplicate guard), and a
concurrent writer makes the save fail and the command be decided again on the new
state (optimistic concurrency).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from shared.envelope import SCHEMA_VERSION, Event, Reply, new_id, utcnow
from shared.errors import ApiError, Code
from shared.store import AppliedMessage, Change, Conflict, Document, DuplicateKey, Store
from shared.telemetry import inject_headers
from shared.topology import COMMANDS


@dataclass(frozen=True)
class NewEvent:
    type: str
    data: dict[str, Any]  # JSON-ready: a model dumped with mode="json", or plain values


@dataclass(frozen=True)
class NewCommand:
    """A command for another service, sent through the outbox once this change is stored."""

    routing_key: str
    body: dict[str, Any]
    exchange: str = COMMANDS
    expiration: float | None = None  # seconds; a command nobody took by then is dropped


@dataclass(frozen=True)
class Decision:
    """What the domain decided: the reply, and the document's new state if it changes."""

    reply: Reply
    doc: Document | None = None
    events: tuple[NewEvent, ...] = field(default_factory=tuple)
    commands: tuple[NewCommand, ...] = field(default_factory=tuple)
    # The reply when another document holds the new unique key; None means retry,
    # since a create that lost a race finds the winner on the next load.
    on_duplicate_key: Reply | None = None


def refusal(code: Code, message: str = "", params: list[str] | None = None) -> Reply:
    """The reply of a refused command or query: the API error, answered as it is."""
    error = ApiError(code, message, params or [])
    return Reply(status=error.status, body=error.body())


def reject(code: Code, message: str = "", params: list[str] | None = None) -> Decision:
    """A decision that changes nothing and answers the API error."""
    return Decision(reply=refusal(code, message, params))


def visible(doc: Document | None, domain_id: str) -> Document | None:
    """The document as a tenant may see it: another tenant's, or a deleted one, is not there
    (it answers 404, exactly like one that never existed)."""
    if doc is None or doc.deleted or doc.domain_id != domain_id:
        return None
    return doc


class Contention(Exception):
    """The aggregate kept changing under us; the message will be redelivered."""


def _command_entry(doc: Document, command: NewCommand) -> dict[str, Any]:
    return {
        "event_id": new_id(),
        "command": command.routing_key,
        "exchange": command.exchange,
        "expiration": command.expiration,
        "domain_id": doc.domain_id,
        "body": command.body,
        "trace": inject_headers({}),
    }


def _outbox_entry(doc: Document, version: int, event: NewEvent) -> dict[str, Any]:
    # Built from trusted values, so not validated; `data` (often the whole server) is
    # already JSON-ready and kept as it is rather than serialised field by field.
    entry = Event.model_construct(
        event_id=new_id(),
        type=event.type,
        domain_id=doc.domain_id,
        aggregate_id=doc.id,
        aggregate_version=version,
        occurred_at=utcnow(),
        schema_version=SCHEMA_VERSION,
        data={},
    ).model_dump(mode="json", exclude={"data"})
    entry["data"] = event.data
    # The relay publishes later, maybe in another process; it continues this trace.
    entry["trace"] = inject_headers({})
    return entry


async def apply(
    store: Store,
    collection: str,
    message_id: str,
    load: Callable[[], Awaitable[Document | None]],
    decide: Callable[[Document | None], Decision],
    attempts: int = 25,
) -> Reply:
    for attempt in range(attempts):
        current = await load()
        if current is not None:
            prior = current.reply_to(message_id)
            if prior is not None:
                return Reply.model_validate(prior)
        decision = decide(current)
        if decision.doc is None:
            return decision.reply
        doc = decision.doc
        expected = current.version if current is not None and current.id == doc.id else 0
        events = tuple(_outbox_entry(doc, expected + 1, e) for e in decision.events) + tuple(
            _command_entry(doc, c) for c in decision.commands
        )
        applied = AppliedMessage(message_id, decision.reply.model_dump(mode="json"))
        try:
            await store.save(collection, Change(doc, expected, events, applied))
        except DuplicateKey:
            if decision.on_duplicate_key is not None:
                return decision.on_duplicate_key
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
            continue
        except Conflict:
            await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
            continue
        return decision.reply
    raise Contention(f"{collection}: gave up after {attempts} conflicting writes")

"""A source server's command channel, pure: commands wait in order; the head is what the
agent gets, again and again, until a result for that command arrives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.aggregates import Decision, NewEvent
from shared.contracts.commands import AgentCommand, EnqueueCommand
from shared.envelope import Reply
from shared.store import Document

COLLECTION = "channels"
EMPTY = AgentCommand(command_name="", command_param=None)


def queue(doc: Document | None) -> list[dict[str, Any]]:
    return list(doc.data.get("queue", [])) if doc is not None else []


def next_command(doc: Document | None) -> AgentCommand:
    pending = queue(doc)
    if not pending:
        return EMPTY
    head = pending[0]
    return AgentCommand(command_name=head["command_name"], command_param=head["command_param"])


def enqueue(
    current: Document | None, command: EnqueueCommand, domain_id: str, now: datetime
) -> Decision:
    entry = {
        **command.model_dump(mode="json", exclude={"server_id"}),
        "queued_at": now.astimezone(UTC).isoformat(),
    }
    base = current or Document(id=command.server_id, domain_id=domain_id, data={"queue": []})
    doc = base.evolve(data={**base.data, "queue": [*queue(current), entry]})
    return Decision(
        reply=Reply(status=200, body={}),
        doc=doc,
        events=(NewEvent("command.queued", {"server_id": command.server_id, **entry}),),
    )


def settle(current: Document | None, command_name: str) -> Decision:
    """A result arrived: the head command, if it is that one, is done."""
    pending = queue(current)
    if current is None or not pending or pending[0]["command_name"] != command_name:
        return Decision(reply=Reply(status=200, body={}))
    doc = current.evolve(data={**current.data, "queue": pending[1:]})
    return Decision(reply=Reply(status=200, body={}), doc=doc)

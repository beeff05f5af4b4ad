"""A source server's command channel, pure: commands wait in order; the head is what the
agent gets, again and again, until a result for that command arrives.

Every change announces the head it leaves (`next`, with the channel's version in the
event's envelope), so that a read model of the agents' next commands — the gateway's,
which answers polls without asking this service — keeps the newest state it has seen
whatever order events reach it in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.aggregates import Decision, NewEvent
from shared.contracts.commands import (
    AgentCommand,
    CommandCompleted,
    CommandQueued,
    EnqueueCommand,
    NextCommand,
)
from shared.envelope import Reply
from shared.store import Document

COLLECTION = "channels"
EMPTY = AgentCommand(command_name="", command_param=None)


def queue(doc: Document | None) -> list[dict[str, Any]]:
    return list(doc.data.get("queue", [])) if doc is not None else []


def _head(pending: list[dict[str, Any]]) -> AgentCommand:
    if not pending:
        return EMPTY
    head = pending[0]
    return AgentCommand(command_name=head["command_name"], command_param=head["command_param"])


def next_command(doc: Document | None) -> AgentCommand:
    return _head(queue(doc))


def next_of(doc: Document | None, server_id: str) -> NextCommand:
    """The next command with the version it was read at (0: nothing was ever queued)."""
    version = doc.version if doc is not None else 0
    return NextCommand(server_id=server_id, version=version, next=next_command(doc))


def enqueue(
    current: Document | None, command: EnqueueCommand, domain_id: str, now: datetime
) -> Decision:
    entry = {
        **command.model_dump(mode="json", exclude={"server_id"}),
        "queued_at": now.astimezone(UTC).isoformat(),
    }
    base = current or Document(id=command.server_id, domain_id=domain_id, data={"queue": []})
    pending = [*queue(current), entry]
    doc = base.evolve(data={**base.data, "queue": pending})
    queued = CommandQueued(server_id=command.server_id, **entry, next=_head(pending))
    return Decision(
        reply=Reply(status=200, body={}),
        doc=doc,
        events=(NewEvent("command.queued", queued.model_dump(mode="json")),),
    )


def settle(current: Document | None, command_name: str) -> Decision:
    """A result arrived: the head command, if it is that one, is done."""
    pending = queue(current)
    if current is None or not pending or pending[0]["command_name"] != command_name:
        return Decision(reply=Reply(status=200, body={}))
    doc = current.evolve(data={**current.data, "queue": pending[1:]})
    completed = CommandCompleted(
        server_id=current.id, command_name=command_name, next=_head(pending[1:])
    )
    return Decision(
        reply=Reply(status=200, body={}),
        doc=doc,
        events=(NewEvent("command.completed", completed.model_dump(mode="json")),),
    )

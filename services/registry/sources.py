"""The source-server rules, pure: identity, registration, update, deletion, views.

Identity rule: a register call with an `id` updates that server (404 if the
caller's domain has none). Without an `id`, the server is identified by its
domain, hostname (case-insensitive; the name when the agent sends no hostname, as
the seed page's own example does) and IP: registering the same host again
updates it instead of creating a duplicate. The store enforces the rule with a
unique key, so two concurrent registrations of one host make one server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.aggregates import Decision, NewEvent, reject, visible
from shared.contracts.lifecycle import (
    ResultCause,
    SourceStateChanged,
    TaskClaim,
    TransitionReply,
    TransitionRequest,
)
from shared.contracts.sources import REQUIRED_FOR_REGISTRATION, ListSources, SourceServerBody
from shared.envelope import Reply
from shared.errors import SmsCode
from shared.store import Document, Query

from . import lifecycle
from .stored import source_of

COLLECTION = "sources"
# Kept by Rehost, never taken from the register body.
_RESERVED = {"id", "domain_id"}


def identity_key(domain_id: str, data: dict[str, Any]) -> str | None:
    """Domain, hostname (or, when the agent sends none, name) and IP; None if unknown."""
    host = data.get("hostname") or data.get("name")
    ip = data.get("ip")
    if not host or not ip:
        return None
    return "\x1f".join((domain_id, str(host).lower(), str(ip)))


def view(doc: Document, version: int | None = None) -> dict[str, Any]:
    """The server as `SourceServerView` describes it: what was sent, plus what Rehost keeps."""
    version = doc.version if version is None else version
    return {**doc.data, "id": doc.id, "domain_id": doc.domain_id, "version": version}


def _sent_fields(body: SourceServerBody) -> dict[str, Any]:
    sent = body.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return {k: v for k, v in sent.items() if k not in _RESERVED}


def _forbidden_domain(body: SourceServerBody, domain_id: str) -> Decision | None:
    if body.domain_id and body.domain_id != domain_id:
        message = f"You do not have permission to register servers in domain {body.domain_id}."
        return reject(SmsCode.FORBIDDEN, message, [message])
    return None


def register(
    current: Document | None,
    body: SourceServerBody,
    domain_id: str,
    *,
    new_id: str,
    now: datetime,
) -> Decision:
    if (denied := _forbidden_domain(body, domain_id)) is not None:
        return denied
    existing = visible(current, domain_id)
    if body.id is not None and existing is None:
        return reject(SmsCode.SOURCE_NOT_FOUND, f"Source server {body.id} does not exist.")
    if existing is None:
        return _create(body, domain_id, new_id, now)
    return _update(existing, body, now)


def _lifecycle_fields(sent: dict[str, Any], current: dict[str, Any]) -> Decision | None:
    """A register sets no lifecycle: a new server starts in an initial state with no
    migration cycle, and an update may only repeat what the server has."""
    state, cycle = sent.get("state"), sent.get("migration_cycle")
    if not current:
        if state is not None and state not in lifecycle.INITIAL:
            return _not_settable(
                "state", state, f"a new server starts {' or '.join(sorted(lifecycle.INITIAL))}"
            )
        if cycle is not None:
            return _not_settable("migration_cycle", cycle, "a new server has none")
        return None
    for name in ("state", "migration_cycle"):
        if name in sent and sent[name] != current.get(name):
            return _not_settable(
                name,
                sent[name],
                f"a registered server's {name} ({current.get(name)}) changes through command "
                "results and task actions",
            )
    return None


def _not_settable(name: str, value: Any, why: str) -> Decision:
    return reject(SmsCode.STATE_NOT_SETTABLE, f"Invalid parameter {name} ({value}): {why}.")


def _create(body: SourceServerBody, domain_id: str, new_id: str, now: datetime) -> Decision:
    sent = _sent_fields(body)
    if (refused := _lifecycle_fields(sent, {})) is not None:
        return refused
    missing = [f for f in REQUIRED_FOR_REGISTRATION if getattr(body, f) in (None, "")]
    if not body.hostname and not body.name:
        missing.append("hostname (or name)")
    if missing:
        return reject(
            SmsCode.INVALID_PARAMETER,
            f"Missing parameter(s) required to register a source server: {', '.join(missing)}.",
        )
    stamp = now.astimezone(UTC).isoformat()
    data = {
        "state": "waiting",
        "connected": True,  # its agent registered it
        **sent,
        "add_date": int(now.timestamp() * 1000),  # epoch ms, as SMS (and its SDKs) have it
        "created_at": stamp,
        "updated_at": stamp,
    }
    doc = Document(
        id=new_id,
        domain_id=domain_id,
        key=identity_key(domain_id, data),
        data=data,
        created_at=now.timestamp(),
    )
    return Decision(
        reply=Reply(status=200, body={"id": new_id}),
        doc=doc,
        events=(NewEvent("source.registered", {"server": view(doc, version=1)}),),
    )


def _update(existing: Document, body: SourceServerBody, now: datetime) -> Decision:
    sent = _sent_fields(body)
    if (refused := _lifecycle_fields(sent, existing.data)) is not None:
        return refused
    changed = sorted(k for k, v in sent.items() if existing.data.get(k) != v)
    reply = Reply(status=200, body={"id": existing.id})
    if not changed:
        return Decision(reply=reply)
    data = {**existing.data, **sent, "updated_at": now.astimezone(UTC).isoformat()}
    doc = existing.evolve(
        data=data,
        key=identity_key(existing.domain_id, data),
    )
    conflict = reject(
        SmsCode.SOURCE_CONFLICT,
        "Another source server of this domain already has this hostname (or name) and ip.",
    ).reply
    return Decision(
        reply=reply,
        doc=doc,
        events=(
            NewEvent(
                "source.updated",
                {"server": view(doc, version=existing.version + 1), "changed": changed},
            ),
        ),
        on_duplicate_key=conflict,
    )


def deletion_refused(current: Document | None, server_id: str, domain_id: str) -> Decision | None:
    """Why the server may not be deleted, or None when it may."""
    existing = visible(current, domain_id)
    if existing is None:
        return reject(SmsCode.SOURCE_NOT_FOUND, f"Source server {server_id} does not exist.")
    if task_id := source_of(existing).get("task_id"):
        return reject(
            SmsCode.SOURCE_HAS_TASK,
            f"Source server {server_id} belongs to migration task {task_id}; "
            "delete the task first.",
        )
    return None


def delete(current: Document | None, server_id: str, domain_id: str, now: datetime) -> Decision:
    if (refused := deletion_refused(current, server_id, domain_id)) is not None:
        return refused
    existing = current
    assert existing is not None
    # A tombstone, not a removal: it keeps the duplicate guard, and frees the identity.
    data = {**existing.data, "updated_at": now.astimezone(UTC).isoformat()}
    doc = existing.evolve(deleted=True, key=None, data=data)
    return Decision(
        reply=Reply(status=200, body={}),
        doc=doc,
        events=(NewEvent("source.deleted", {"server_id": existing.id}),),
    )


def list_query(query: ListSources, domain_id: str) -> Query:
    """The store query of `GET /v3/sources`; `id` is answered by a read of its own."""
    filters = {
        "state": query.state,
        "ip": query.ip,
        "migration_cycle": query.migration_cycle,
        "connected": query.connected,
    }
    return Query(
        domain_id=domain_id,
        equals={k: v for k, v in filters.items() if v is not None},
        contains={"name": query.name} if query.name else {},
        limit=query.limit,
        offset=query.offset,
    )


def matches(doc: Document, query: ListSources) -> bool:
    """Whether one server passes the list's filters (for `id`, read on its own)."""
    data = doc.data
    equal = all(
        value is None or data.get(name) == value
        for name, value in (
            ("state", query.state),
            ("ip", query.ip),
            ("migration_cycle", query.migration_cycle),
            ("connected", query.connected),
        )
    )
    return equal and (not query.name or query.name in str(data.get("name", "")))


def apply_transition(
    current: Document | None, request: TransitionRequest, domain_id: str, now: datetime
) -> Decision:
    existing = visible(current, domain_id)
    if existing is None:
        return reject(
            SmsCode.SOURCE_NOT_FOUND, f"Source server {request.server_id} does not exist."
        )
    source = source_of(existing)
    state, cycle = source.get("state", "waiting"), source.get("migration_cycle")
    step = lifecycle.transition(state, cycle, request.cause)
    if isinstance(step, lifecycle.TransitionRefused):
        return reject(
            SmsCode.TRANSITION_REFUSED,
            f"Source server {existing.id} is {state}: {step.reason}. Nothing was changed.",
        )
    if (step.to, step.cycle) == (state, cycle):
        return Decision(reply=_transition_reply(existing, existing.version, changed=False))
    stamp = now.astimezone(UTC).isoformat()
    data = {**existing.data, "state": step.to, "updated_at": stamp}
    if step.cycle is not None:
        data["migration_cycle"] = step.cycle
    data.pop("error", None)
    if step.to == "error" and isinstance(request.cause, ResultCause):
        data["error"] = {"command_name": request.cause.command_name, "reason": request.cause.reason}
    doc = existing.evolve(data=data)
    version = existing.version + 1
    changed = SourceStateChanged.model_validate(
        {
            "server_id": existing.id,
            "from": state,
            "to": step.to,
            "migration_cycle": data.get("migration_cycle"),
            "cause": request.cause.model_dump(mode="json", exclude_none=True),
            "version": version,
            "at": stamp,
        }
    )
    return Decision(
        reply=_transition_reply(doc, version, changed=True),
        doc=doc,
        events=(NewEvent("source.state_changed", changed.model_dump(mode="json", by_alias=True)),),
    )


def _transition_reply(doc: Document, version: int, *, changed: bool) -> Reply:
    reply = TransitionReply(
        server_id=doc.id,
        state=source_of(doc).get("state", "waiting"),
        migration_cycle=source_of(doc).get("migration_cycle"),
        changed=changed,
        version=version,
    )
    return Reply(status=200, body=reply.model_dump(mode="json"))


def claim(current: Document | None, request: TaskClaim, domain_id: str) -> Decision:
    """A task takes the server: one task at a time, so the server cannot be deleted under it."""
    existing = visible(current, domain_id)
    if existing is None:
        return reject(
            SmsCode.SOURCE_NOT_FOUND, f"Source server {request.server_id} does not exist."
        )
    summary = Reply(status=200, body=view(existing))
    holder = source_of(existing).get("task_id")
    if holder == request.task_id:
        return Decision(reply=summary)
    if holder:
        return reject(
            SmsCode.SOURCE_HAS_TASK,
            f"Source server {existing.id} already belongs to migration task {holder}.",
        )
    doc = existing.evolve(data={**existing.data, "task_id": request.task_id})
    return Decision(reply=Reply(status=200, body=view(doc, existing.version + 1)), doc=doc)


def release(current: Document | None, request: TaskClaim, domain_id: str) -> Decision:
    existing = visible(current, domain_id)
    if existing is None or source_of(existing).get("task_id") != request.task_id:
        return Decision(reply=Reply(status=200, body={}))
    data = {k: v for k, v in existing.data.items() if k != "task_id"}
    return Decision(reply=Reply(status=200, body={}), doc=existing.evolve(data=data))

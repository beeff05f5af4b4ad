"""Target-server locks, pure. One lock document per target server (per domain): the
store's compare-and-set on its version makes at most one task the holder, and its
fencing token grows by one with every new holder, so a task that lost the lock can
be told apart from the one that holds it now."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.aggregates import Decision, NewEvent, reject
from shared.contracts.tasks import LockView, TargetLocked, TargetUnlocked, UnlockReason
from shared.envelope import Reply
from shared.errors import SmsCode
from shared.keys import scoped
from shared.store import Document

from .stored import Lock, lock_of, stored

COLLECTION = "locks"


def lock_id(domain_id: str, vm_id: str) -> str:
    return scoped(domain_id, vm_id)


def view(doc: Document | None, vm_id: str) -> LockView:
    if doc is None:
        return LockView(vm_id=vm_id, held=False, fencing_token=0)
    return LockView(
        vm_id=vm_id,
        held=lock_of(doc)["holder"] is not None,
        fencing_token=lock_of(doc)["fencing_token"],
        locked_at=lock_of(doc).get("locked_at"),
    )


def holder(doc: Document | None) -> str | None:
    return None if doc is None else lock_of(doc)["holder"]


def fenced(task_id: str, vm_id: str) -> Decision:
    """A task whose lock was taken over (or given back) acts no more."""
    return reject(
        SmsCode.TASK_FENCED,
        f"Migration task {task_id} no longer holds the lock on target server {vm_id}.",
    )


def acquire(
    current: Document | None, domain_id: str, vm_id: str, task_id: str, now: datetime
) -> Decision:
    if holder(current) == task_id:
        assert current is not None
        return Decision(reply=Reply(status=200, body=view(current, vm_id).model_dump()))
    if (other := holder(current)) is not None:
        return reject(
            SmsCode.TARGET_LOCKED,
            f"Target server {vm_id} is locked by migration task {other}.",
            [other],
        )
    token = (lock_of(current)["fencing_token"] if current else 0) + 1
    data = Lock(
        vm_id=vm_id, holder=task_id, fencing_token=token, locked_at=now.astimezone(UTC).isoformat()
    )
    base = current or Document(id=lock_id(domain_id, vm_id), domain_id=domain_id, data={})
    doc = base.evolve(data=stored(data))
    locked = TargetLocked(task_id=task_id, vm_id=vm_id, fencing_token=token)
    return Decision(
        reply=Reply(status=200, body=view(doc, vm_id).model_dump()),
        doc=doc,
        events=(NewEvent("task.target_locked", locked.model_dump(mode="json")),),
    )


def release(
    current: Document | None, vm_id: str, task_id: str, reason: UnlockReason, now: datetime
) -> Decision:
    """Releases the lock if `task_id` holds it; otherwise changes nothing (idempotent)."""
    if current is None or holder(current) != task_id:
        return Decision(reply=Reply(status=200, body={}))
    data = Lock(**lock_of(current))
    token = data["fencing_token"]
    data["holder"], data["released_at"] = None, now.astimezone(UTC).isoformat()
    unlocked = TargetUnlocked(task_id=task_id, vm_id=vm_id, fencing_token=token, reason=reason)
    return Decision(
        reply=Reply(status=200, body={}),
        doc=current.evolve(data=stored(data)),
        events=(NewEvent("task.target_unlocked", unlocked.model_dump(mode="json")),),
    )

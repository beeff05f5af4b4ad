"""The task-lock service's handlers.

Starting a task takes four steps, each idempotent and keyed by the message, so
that a crash between any two is finished by the redelivery of the same message:
(1) take the target lock, (2) move the source server (the registry applies it),
(3) write the task's new state with its events and the agent's command in the
outbox, (4) the relay publishes them. A refusal at (2) gives the lock back.
"""

from __future__ import annotations

from pydantic import BaseModel

from shared import metrics
from shared.aggregates import Decision, apply, reject, visible
from shared.bulk import bulk
from shared.bus import Requests
from shared.consumer import Handler, query, tenant
from shared.contracts.lifecycle import ActionCause, TaskClaim, TransitionRequest
from shared.contracts.tasks import (
    DeleteTasks,
    ListTasks,
    LockView,
    TaskActionCommand,
    TaskBody,
    TaskProgressCommand,
    TaskRef,
    UnlockReason,
)
from shared.envelope import Event, Incoming, Reply, derived_id, utcnow
from shared.errors import SmsCode
from shared.failpoints import failpoint
from shared.store import Document, Query, Store

from . import locks, tasks
from .stored import task_of


class TaskLockHandlers:
    def __init__(self, store: Store, requester: Requests) -> None:
        self.store = store
        self.requester = requester

    def routes(self) -> dict[str, Handler]:
        return {
            "sms.task.create": self.create,
            "sms.task.action": self.action,
            "sms.task.unlock": self.unlock,
            "sms.task.delete": self.delete,
            "sms.task.delete_many": self.delete_many,
            "sms.task.progress": self.progress,
            "sms.task.progress_many": bulk(self.progress),
            "sms.task.get": self.get,
            "sms.task.list": self.list,
            "source.state_changed": self.source_state_changed,
        }

    async def _registry(
        self, key: str, body: BaseModel, domain_id: str, incoming: Incoming, step: str
    ) -> Reply:
        """Asks the registry, under an id derived from this message and step: a redelivery
        asks again with the same id, and the registry's duplicate guard answers as before."""
        return await self.requester.request(
            key,
            body.model_dump_json().encode(),
            domain_id=domain_id,
            message_id=derived_id(incoming.message_id, step),
        )

    async def _task(self, task_id: str, domain_id: str) -> Document | None:
        return visible(await self.store.get(tasks.COLLECTION, task_id), domain_id)

    async def create(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        body = incoming.read(TaskBody)
        task_id = derived_id(incoming.message_id, "task")
        claim = TaskClaim(server_id=body.source_server.id, task_id=task_id)
        claimed = await self._registry("sms.source.claim", claim, domain_id, incoming, "claim")
        if claimed.status != 200:
            return claimed
        now = utcnow()
        return await apply(
            self.store,
            tasks.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(tasks.COLLECTION, task_id),
            lambda current: tasks.create(current, task_id, body, domain_id, now),
        )

    async def action(self, incoming: Incoming) -> Reply:
        """The four steps of the module's docstring: (1) the lock, (2) the source server,
        (3) the task with its outbox, which (4) the relay publishes."""
        domain_id = tenant(incoming)
        command = incoming.read(TaskActionCommand)
        task = await self._task(command.task_id, domain_id)
        if task is None:
            return tasks.not_found(command.task_id).reply
        if (prior := task.reply_to(incoming.message_id)) is not None:
            return Reply.model_validate(prior)  # redelivered once applied: the same answer
        step = tasks.plan(command.operation, task_of(task)["state"])
        if isinstance(step, tasks.ActionRefused):
            return tasks.refused_action(step, task.id).reply
        lock = await self._lock_for(task, step, incoming.message_id)
        if isinstance(lock, Reply):
            return lock
        moved = await self._move_source(task, command.operation, incoming)
        if moved.status != 200:
            if step.acquires_lock:  # the lifecycle said no: the lock goes back
                await self._release(task, "task_failed", derived_id(incoming.message_id, "undo"))
            return moved
        failpoint("source_moved")
        reply = await self._write_action(task, command.operation, step, lock, incoming.message_id)
        failpoint("task_written")
        return reply

    async def _lock_for(
        self, task: Document, step: tasks.ActionStep, message_id: str
    ) -> LockView | Reply:
        """(1) Takes the target's lock for a start, or checks the task still holds it."""
        vm_id = task_of(task)["target_server"]["vm_id"]
        lock_key = locks.lock_id(task.domain_id, vm_id)
        if not step.acquires_lock:
            lock_doc = await self.store.get(locks.COLLECTION, lock_key)
            if locks.holder(lock_doc) != task.id:
                return locks.fenced(task.id, vm_id).reply
            return locks.view(lock_doc, vm_id)
        taken = await apply(
            self.store,
            locks.COLLECTION,
            derived_id(message_id, "lock"),
            lambda: self.store.get(locks.COLLECTION, lock_key),
            lambda current: locks.acquire(current, task.domain_id, vm_id, task.id, utcnow()),
        )
        if taken.status != 200:
            metrics.lock_contention.add(1)
            return taken
        failpoint("lock_taken")
        return LockView.model_validate(taken.body)

    async def _move_source(self, task: Document, operation: str, incoming: Incoming) -> Reply:
        """(2) The registry, the source server's one writer, applies the action to it."""
        transition = TransitionRequest(
            server_id=task_of(task)["source_server_id"],
            cause=ActionCause(operation=operation, task_id=task.id),
        )
        return await self._registry(
            "sms.source.transition", transition, task.domain_id, incoming, "transition"
        )

    async def _write_action(
        self,
        task: Document,
        operation: str,
        step: tasks.ActionStep,
        lock: LockView,
        message_id: str,
    ) -> Reply:
        """(3) The task's new state, its events and the agent's command, in one write."""
        return await apply(
            self.store,
            tasks.COLLECTION,
            message_id,
            lambda: self._task(task.id, task.domain_id),
            lambda current: (
                tasks.apply_action(current, operation, step, lock, utcnow())
                if current is not None and task_of(current)["state"] == task_of(task)["state"]
                else reject(
                    SmsCode.TASK_STATE_CONFLICT, f"Migration task {task.id} changed meanwhile."
                )
            ),
        )

    async def _release(self, task: Document, reason: UnlockReason, message_id: str) -> Reply:
        vm_id = task_of(task)["target_server"]["vm_id"]
        key = locks.lock_id(task.domain_id, vm_id)
        return await apply(
            self.store,
            locks.COLLECTION,
            message_id,
            lambda: self.store.get(locks.COLLECTION, key),
            lambda current: locks.release(current, vm_id, task.id, reason, utcnow()),
        )

    async def unlock(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        ref = incoming.read(TaskRef)
        task = await self._task(ref.task_id, domain_id)
        if task is None:
            return tasks.not_found(ref.task_id).reply
        await self._release(task, "explicit_unlock", incoming.message_id)
        return Reply(status=200, body={})

    async def delete(self, incoming: Incoming) -> Reply:
        ref = incoming.read(TaskRef)
        return await self._delete(incoming.message_id, ref.task_id, tenant(incoming))

    async def delete_many(self, incoming: Incoming) -> Reply:
        """Each task follows the single-delete rules. All are checked first: when one may
        not be deleted, the answer is its refusal and none is deleted."""
        domain_id = tenant(incoming)
        ids = list(dict.fromkeys(incoming.read(DeleteTasks).ids))
        found = await self.store.get_many(tasks.COLLECTION, ids)
        for task_id in ids:
            doc = found.get(task_id)
            if doc is not None and doc.reply_to(derived_id(incoming.message_id, task_id)):
                continue  # deleted by this very message, before a redelivery
            task = visible(doc, domain_id)
            if task is None or not tasks.may_delete(task_of(task)["state"]):
                return tasks.delete(task, task_id, domain_id).reply
        for task_id in ids:
            reply = await self._delete(derived_id(incoming.message_id, task_id), task_id, domain_id)
            if reply.status != 200:
                return reply
        return Reply(status=200, body={})

    async def _delete(self, message_id: str, task_id: str, domain_id: str) -> Reply:
        task = await self._task(task_id, domain_id)
        if task is None:
            prior = await self.store.get(tasks.COLLECTION, task_id)
            if prior is not None and (reply := prior.reply_to(message_id)) is not None:
                return Reply.model_validate(reply)
            return tasks.not_found(task_id).reply
        if not tasks.may_delete(task_of(task)["state"]):
            return tasks.delete(task, task.id, domain_id).reply
        await self._release(task, "task_deleted", derived_id(message_id, "unlock"))
        claim = TaskClaim(server_id=task_of(task)["source_server_id"], task_id=task.id)
        await self.requester.request(
            "sms.source.release",
            claim.model_dump_json().encode(),
            domain_id=domain_id,
            message_id=derived_id(message_id, "release"),
        )
        return await apply(
            self.store,
            tasks.COLLECTION,
            message_id,
            lambda: self.store.get(tasks.COLLECTION, task.id),
            lambda current: tasks.delete(current, task.id, domain_id),
        )

    async def progress(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        report = incoming.read(TaskProgressCommand)
        return await apply(
            self.store,
            tasks.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(tasks.COLLECTION, report.task_id),
            lambda current: tasks.report_progress(current, report, domain_id, utcnow()),
        )

    @query
    async def get(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        ref = incoming.read(TaskRef)
        task = await self._task(ref.task_id, domain_id)
        if task is None:
            return tasks.not_found(ref.task_id).reply
        return Reply(status=200, body=tasks.view(task))

    @query
    async def list(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        query = incoming.read(ListTasks)
        equals = {
            k: v
            for k, v in (("state", query.state), ("source_server_id", query.source_server_id))
            if v is not None
        }
        page = await self.store.find(
            tasks.COLLECTION,
            Query(
                domain_id=domain_id,
                equals=equals,
                contains={"name": query.name} if query.name else {},
                limit=query.limit,
                offset=query.offset,
            ),
        )
        return Reply(
            status=200, body={"count": page.total, "tasks": [tasks.view(d) for d in page.items]}
        )

    async def source_state_changed(self, incoming: Incoming) -> None:
        """Follows the source server: its new state may finish, abort or fail the task."""
        event = incoming.read(Event)
        server_id, to = event.data["server_id"], event.data["to"]
        page = await self.store.find(
            tasks.COLLECTION,
            Query(domain_id=event.domain_id, equals={"source_server_id": server_id}, limit=100),
        )
        for task in page.items:
            if tasks.follow_source(to, task_of(task)["state"]) is not None:
                await self._follow(task, to, incoming.message_id)

    async def _follow(self, task: Document, source_state: str, message_id: str) -> None:
        def decide(current: Document | None) -> Decision:
            step = (
                None
                if current is None
                else tasks.follow_source(source_state, task_of(current)["state"])
            )
            if current is None or step is None:
                return Decision(reply=Reply(status=200, body={}))
            return tasks.apply_source_state(current, step, source_state, utcnow())

        await apply(
            self.store,
            tasks.COLLECTION,
            message_id,
            lambda: self._task(task.id, task.domain_id),
            decide,
        )
        step = tasks.follow_source(source_state, task_of(task)["state"])
        if step is not None and step.releases is not None:
            await self._release(task, step.releases, derived_id(message_id, task.id))

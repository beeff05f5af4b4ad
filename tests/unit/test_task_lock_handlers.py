"""The task-lock handlers' branches, with the in-memory SQLite store and a scripted
requester in place of the broker and the registry."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from services.task_lock import locks
from services.task_lock.handlers import TaskLockHandlers
from shared.envelope import Incoming, Reply
from shared.store import Store
from tests.support.fakes import ScriptedRequester

DOMAIN = "d1"
OK = Reply(status=200, body={"server_id": "s1", "state": "initialize", "changed": True})
REFUSED = Reply(status=409, body={"error_code": "SMS.2005", "error_msg": "not in waiting"})


def incoming(key: str, body: dict[str, Any], message_id: str | None = None) -> Incoming:
    return Incoming(
        routing_key=key,
        message_id=message_id or uuid.uuid4().hex,
        body=json.dumps(body).encode(),
        domain_id=DOMAIN,
        actor=None,
        schema_version=1,
        reply_to=None,
        correlation_id=None,
        delivery_count=0,
    )


async def new_task(handlers: TaskLockHandlers, vm_id: str = "vm-1") -> str:
    body = {
        "name": "t",
        "type": "MIGRATE_FILE",
        "os_type": "LINUX",
        "migration_ip": "1.1.1.1",
        "source_server": {"id": f"s-{uuid.uuid4().hex[:6]}"},
        "target_server": {"vm_id": vm_id, "name": "target"},
    }
    reply = await handlers.create(incoming("sms.task.create", body))
    assert reply.status == 200
    return str(reply.body["id"])


def act(task_id: str, operation: str, message_id: str | None = None) -> Incoming:
    return incoming("sms.task.action", {"task_id": task_id, "operation": operation}, message_id)


async def holder(store: Store, vm_id: str = "vm-1") -> str | None:
    return locks.holder(await store.get(locks.COLLECTION, locks.lock_id(DOMAIN, vm_id)))


async def test_a_start_the_registry_refuses_gives_the_lock_back(store: Store) -> None:
    registry = ScriptedRequester({"sms.source.claim": OK, "sms.source.transition": REFUSED})
    handlers = TaskLockHandlers(store, registry)
    task_id = await new_task(handlers)
    reply = await handlers.action(act(task_id, "start"))
    assert reply == REFUSED  # the registry's answer, as it gave it
    assert await holder(store) is None
    task = await handlers.get(incoming("sms.task.get", {"task_id": task_id}))
    assert task.body["state"] == "READY"


async def test_a_task_whose_lock_was_taken_over_is_refused(store: Store) -> None:
    registry = ScriptedRequester({"sms.source.claim": OK, "sms.source.transition": OK})
    handlers = TaskLockHandlers(store, registry)
    task_id = await new_task(handlers)
    assert (await handlers.action(act(task_id, "start"))).status == 200
    await handlers.unlock(incoming("sms.task.unlock", {"task_id": task_id}))
    other = await new_task(handlers)
    assert (await handlers.action(act(other, "start"))).status == 200
    stopped = await handlers.action(act(task_id, "stop"))
    assert stopped.status == 409 and stopped.body["error_code"] == "SMS.3005"
    assert registry.keys().count("sms.source.transition") == 2  # the fenced stop asked nothing


async def test_a_start_on_a_locked_target_names_the_holder(store: Store) -> None:
    handlers = TaskLockHandlers(
        store, ScriptedRequester({"sms.source.claim": OK, "sms.source.transition": OK})
    )
    first, second = await new_task(handlers), await new_task(handlers)
    assert (await handlers.action(act(first, "start"))).status == 200
    refused = await handlers.action(act(second, "start"))
    assert refused.status == 409 and refused.body["error_code"] == "SMS.3002"
    assert first in refused.body["error_msg"] and await holder(store) == first


async def test_a_duplicate_delivery_gets_the_same_reply_and_changes_nothing(store: Store) -> None:
    registry = ScriptedRequester({"sms.source.claim": OK, "sms.source.transition": OK})
    handlers = TaskLockHandlers(store, registry)
    task_id = await new_task(handlers)
    message_id = uuid.uuid4().hex
    first = await handlers.action(act(task_id, "start", message_id))
    lock = await store.get(locks.COLLECTION, locks.lock_id(DOMAIN, "vm-1"))
    again = await handlers.action(act(task_id, "start", message_id))
    assert first == again == Reply(status=200, body={})
    after = await store.get(locks.COLLECTION, locks.lock_id(DOMAIN, "vm-1"))
    assert lock is not None and after is not None
    assert (after.version, after.data["fencing_token"]) == (lock.version, 1)
    assert registry.keys().count("sms.source.transition") == 1  # answered from the task


@pytest.mark.parametrize(
    ("operation", "code"),
    [("clone_test", "SMS.3004"), ("stop", "SMS.3003"), ("cutover", "SMS.3003")],
)
async def test_an_action_the_task_cannot_take_asks_nobody(
    store: Store, operation: str, code: str
) -> None:
    registry = ScriptedRequester({"sms.source.claim": OK})
    handlers = TaskLockHandlers(store, registry)
    task_id = await new_task(handlers)
    refused = await handlers.action(act(task_id, operation))
    assert refused.body["error_code"] == code
    assert registry.keys() == ["sms.source.claim"]

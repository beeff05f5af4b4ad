"""The load–decide–save loop every handler runs, over the in-memory SQLite store."""

from __future__ import annotations

import asyncio

from shared.aggregates import Decision, NewEvent, apply, reject, visible
from shared.envelope import Reply
from shared.errors import SmsCode
from shared.store import Document, Store

OK = Reply(status=200, body={"ok": True})


def count_up(current: Document | None) -> Decision:
    base = current or Document(id="a", domain_id="d", data={"n": 0})
    return Decision(
        reply=Reply(status=200, body={"n": base.data["n"] + 1}),
        doc=base.evolve(data={"n": base.data["n"] + 1}),
        events=(NewEvent("counted", {"n": base.data["n"] + 1}),),
    )


async def test_a_message_applied_before_gets_its_first_reply_and_changes_nothing(
    store: Store,
) -> None:
    first = await apply(store, "c", "m1", lambda: store.get("c", "a"), count_up)
    again = await apply(store, "c", "m1", lambda: store.get("c", "a"), count_up)
    doc = await store.get("c", "a")
    assert first == again == Reply(status=200, body={"n": 1})
    assert doc is not None and (doc.version, doc.data["n"]) == (1, 1)
    [pending] = await store.pending("c", 10)
    assert [e["type"] for e in pending.entries] == ["counted"]


async def test_concurrent_writers_are_decided_again_on_the_new_state(store: Store) -> None:
    await asyncio.gather(
        *(apply(store, "c", f"m{i}", lambda: store.get("c", "a"), count_up) for i in range(20))
    )
    doc = await store.get("c", "a")
    assert doc is not None and (doc.version, doc.data["n"]) == (20, 20)


async def test_a_decision_without_a_document_writes_nothing(store: Store) -> None:
    refused = await apply(
        store, "c", "m1", lambda: store.get("c", "a"), lambda _: reject(SmsCode.SOURCE_NOT_FOUND)
    )
    assert refused.status == 404 and refused.body["error_code"] == "SMS.2001"
    assert await store.get("c", "a") is None


async def test_a_unique_key_taken_elsewhere_answers_the_decisions_duplicate_reply(
    store: Store,
) -> None:
    await apply(
        store,
        "c",
        "m0",
        lambda: store.get("c", "x"),
        lambda _: Decision(reply=OK, doc=Document(id="x", domain_id="d", data={}, key="k")),
    )
    taken = Reply(status=409, body={"error_code": "SMS.2002"})
    reply = await apply(
        store,
        "c",
        "m1",
        lambda: store.get("c", "y"),
        lambda _: Decision(
            reply=OK, doc=Document(id="y", domain_id="d", data={}, key="k"), on_duplicate_key=taken
        ),
    )
    assert reply == taken and await store.get("c", "y") is None


def test_another_tenants_or_a_deleted_document_is_not_visible() -> None:
    doc = Document(id="a", domain_id="d1", data={})
    assert visible(doc, "d1") is doc
    assert visible(doc, "d2") is None and visible(doc.evolve(deleted=True), "d1") is None

"""The MongoDB adapter's filters and updates, checked without a server."""

from __future__ import annotations

from shared.store import AppliedMessage, Change, Document, Query
from shared.store import mongo_queries as q
from shared.store.base import APPLIED_MEMORY

DOC = Document(id="s1", domain_id="d1", key="k", data={"name": "a"})


def test_insert_carries_state_outbox_and_applied_in_one_document() -> None:
    change = Change(DOC, 0, ({"event_id": "e1"},), AppliedMessage("m1", {"status": 200}))
    raw = q.insert_document(change, now=5.0)
    assert raw["_id"] == "s1" and raw["version"] == 1 and raw["key"] == "k"
    assert raw["outbox"] == [{"event_id": "e1"}] and raw["pending"] is True
    assert raw["applied"] == [{"message_id": "m1", "reply": {"status": 200}}]
    assert raw["created_at"] == raw["updated_at"] == 5.0
    assert q.to_document(raw).reply_to("m1") == {"status": 200}


def test_update_is_conditional_on_the_version_and_appends_events() -> None:
    change = Change(
        DOC.evolve(data={"name": "b"}), 3, ({"event_id": "e2"},), AppliedMessage("m", {})
    )
    assert q.update_filter(change) == {"_id": "s1", "version": 3}
    spec = q.update_spec(change, now=9.0)
    assert spec["$set"]["version"] == 4 and spec["$set"]["data"] == {"name": "b"}
    assert spec["$set"]["pending"] is True
    assert spec["$push"]["outbox"] == {"$each": [{"event_id": "e2"}]}
    assert spec["$push"]["applied"]["$slice"] == -APPLIED_MEMORY
    assert "outbox" not in spec["$set"]


def test_update_without_events_leaves_outbox_alone() -> None:
    spec = q.update_spec(Change(DOC, 1), now=1.0)
    assert "$push" not in spec and "pending" not in spec["$set"]


def test_find_filter_escapes_substrings_and_hides_deleted() -> None:
    flt = q.find_filter(
        Query(domain_id="d1", equals={"state": "waiting"}, contains={"name": "a.b*"})
    )
    assert flt == {
        "domain_id": "d1",
        "deleted": False,
        "data.state": "waiting",
        "data.name": {"$regex": r"a\.b\*"},
    }
    assert "deleted" not in q.find_filter(Query(include_deleted=True))


def test_mark_published_removes_only_those_events_atomically() -> None:
    pipeline = q.mark_published_spec(["e1"])
    assert pipeline[0]["$set"]["outbox"]["$filter"]["cond"] == {
        "$not": {"$in": ["$$this.event_id", ["e1"]]}
    }
    assert "pending" in pipeline[1]["$set"]


def test_unique_key_index_ignores_documents_without_a_key() -> None:
    keys, options = q.INDEXES[0]
    assert keys == [("key", 1)] and options["unique"] is True
    assert options["partialFilterExpression"] == {"key": {"$type": "string"}}


def test_a_tenants_list_matching_a_field_is_hinted_to_an_index_in_the_lists_order() -> None:
    """Equalities first, then the list's order: a page is read in order from the index."""
    assert q.find_hint(Query(domain_id="d", equals={"state": "x", "ip": "y"})) == [
        ("domain_id", 1),
        ("data.state", 1),
        ("deleted", 1),
        *q.FIND_SORT,
    ]
    assert q.find_hint(Query(equals={"status": "PROCESSING"})) is None  # a sweep
    assert q.find_hint(Query(domain_id="d")) is None  # the list's own order index
    assert [("data.state", 1)] in q.field_indexes("state")

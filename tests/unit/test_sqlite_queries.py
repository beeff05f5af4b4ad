"""The SQLite adapter's SQL, built without a database."""

from __future__ import annotations

import sqlite3

import pytest

from shared.store import sqlite_queries as q
from shared.store.base import AppliedMessage, Query


def test_a_query_becomes_a_where_with_its_arguments_in_order() -> None:
    where, args = q.where(
        Query(domain_id="d", equals={"state": "x", "a.b": 2}, contains={"name": "we"})
    )
    assert where == (
        " WHERE domain_id = ? AND deleted = 0 AND json_extract(data, '$.state') = ? "
        "AND json_extract(data, '$.a.b') = ? AND instr(json_extract(data, '$.name'), ?) > 0"
    )
    assert args == ["d", "x", 2, "we"]
    assert q.where(Query(include_deleted=True)) == ("", [])


@pytest.mark.parametrize("name", ["x') OR 1=1 --", "a b", "", "1abc", "x" * 200])
def test_a_field_name_that_is_not_a_plain_path_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="bad field name"):
        q.where(Query(equals={name: 1}))


def test_an_index_per_field_matched_on_replaces_the_field_only_one() -> None:
    index, statements = q.field_index("sources", "state")
    assert index == "sources_by_state"
    assert statements == [
        "DROP INDEX IF EXISTS sources_eq_state",
        "CREATE INDEX IF NOT EXISTS sources_by_state ON sources "
        "(json_extract(data, '$.state'), domain_id, deleted, created_at)",
    ]


def test_a_tenants_list_matched_on_a_field_searches_that_fields_index() -> None:
    # An in-memory database only to ask SQLite's planner: with the field alone in the
    # index it read the tenant's rows in order through sources_by_domain instead.
    conn = sqlite3.connect(":memory:")
    for sql in [*q.schema("sources"), *q.field_index("sources", "state")[1]]:
        conn.execute(sql)
    where, args = q.where(Query(domain_id="d", equals={"state": "x"}))
    rows = f"SELECT id FROM sources{where} ORDER BY created_at DESC, id DESC"
    for sql in (rows, f"SELECT count(*) FROM sources{where}"):
        plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", args))
        assert "USING INDEX sources_by_state (<expr>=? AND domain_id=? AND deleted=?)" in plan


def test_a_collection_has_its_table_its_order_index_and_its_outbox() -> None:
    statements = " ".join(q.schema("sources"))
    assert "CREATE TABLE IF NOT EXISTS sources (" in statements
    assert "sources_by_domain ON sources (domain_id, deleted, created_at)" in statements
    assert "CREATE TABLE IF NOT EXISTS sources_outbox" in statements


def test_a_row_reads_back_as_the_document_and_keeps_the_last_applied_messages() -> None:
    applied = q.applied_json([{"message_id": f"m{i}", "reply": {}} for i in range(70)], None)
    row = (
        "id1",
        "d",
        None,
        3,
        0,
        1.0,
        2.0,
        '{"n": 1}',
        q.applied_json([], AppliedMessage("m", {})),
    )
    doc = q.row_to_doc(row)
    assert (doc.id, doc.version, doc.data, doc.deleted) == ("id1", 3, {"n": 1}, False)
    assert doc.reply_to("m") == {}
    assert len(q.row_to_doc((*row[:8], applied)).applied) == 64
    assert q.path_of("sqlite:///var/x.db") == "var/x.db" and q.path_of("sqlite://") == ":memory:"


def test_the_applied_messages_are_read_from_their_text_only_for_an_id_it_holds() -> None:
    stored = [AppliedMessage(f"m-{i}", {"status": 200, "n": i}) for i in range(3)]
    stored.append(AppliedMessage('odd"id', {"status": 409}))
    text = q.applied_json([{"message_id": a.message_id, "reply": a.reply} for a in stored], None)
    applied = q.row_to_doc(("d", "t", None, 1, 0, 1.0, 1.0, "{}", text)).applied
    assert applied.reply_to("m-9") is None and applied.reply_to("m-1") == {"status": 200, "n": 1}
    assert applied.reply_to('odd"id') == {"status": 409}  # escaped in JSON: found by parsing
    assert applied == stored and len(applied) == 4

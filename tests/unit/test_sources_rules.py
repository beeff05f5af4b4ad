"""The registry's pure rules: identity, create, update, delete."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from services.registry import sources
from shared.aggregates import visible
from shared.contracts.sources import SourceServerBody
from shared.store import Document

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
BASE = {"hostname": "web-1", "ip": "10.0.0.1", "os_type": "LINUX", "os_version": "X"}


def body(**fields: object) -> SourceServerBody:
    return SourceServerBody.model_validate(fields)


def created() -> Document:
    decision = sources.register(None, body(**BASE), "d1", new_id="s1", now=NOW)
    assert decision.doc is not None
    return decision.doc.evolve(version=1)


def test_create_assigns_the_id_waiting_state_and_identity() -> None:
    decision = sources.register(None, body(**BASE), "d1", new_id="s1", now=NOW)
    assert decision.reply.status == 200 and decision.reply.body == {"id": "s1"}
    assert decision.doc is not None
    assert decision.doc.key == sources.identity_key("d1", BASE)
    assert decision.doc.data["state"] == "waiting"
    assert [e.type for e in decision.events] == ["source.registered"]
    assert decision.events[0].data["server"]["version"] == 1


def test_identity_ignores_hostname_case_and_falls_back_to_name() -> None:
    assert sources.identity_key("d", {"hostname": "WEB", "ip": "1"}) == sources.identity_key(
        "d", {"hostname": "web", "ip": "1"}
    )
    assert sources.identity_key("d", {"name": "n", "ip": "1"}) is not None
    assert sources.identity_key("d", {"hostname": "web"}) is None
    assert sources.identity_key("d1", BASE) != sources.identity_key("d2", BASE)


def test_update_merges_changed_fields_and_names_them() -> None:
    decision = sources.register(created(), body(**BASE, memory=5), "d1", new_id="unused", now=NOW)
    assert decision.doc is not None and decision.doc.id == "s1"
    assert decision.doc.data["memory"] == 5 and decision.doc.data["hostname"] == "web-1"
    assert decision.events[0].data["changed"] == ["memory"]
    assert decision.on_duplicate_key is not None and decision.on_duplicate_key.status == 409


def test_an_identical_registration_changes_nothing() -> None:
    decision = sources.register(created(), body(**BASE), "d1", new_id="unused", now=NOW)
    assert decision.doc is None and decision.events == ()
    assert decision.reply.body == {"id": "s1"}


def test_refusals() -> None:
    assert sources.register(None, body(id="x"), "d1", new_id="n", now=NOW).reply.status == 404
    assert sources.register(None, body(ip="1"), "d1", new_id="n", now=NOW).reply.status == 400
    other = sources.register(created(), body(id="s1"), "d2", new_id="n", now=NOW)
    assert other.reply.status == 404
    state = sources.register(created(), body(id="s1", state="finished"), "d1", new_id="n", now=NOW)
    assert state.reply.status == 400 and state.reply.body["error_code"] == "SMS.2003"
    foreign = sources.register(None, body(**BASE, domain_id="d9"), "d1", new_id="n", now=NOW)
    assert foreign.reply.status == 403


def test_delete_leaves_a_tombstone_without_identity() -> None:
    decision = sources.delete(created(), "s1", "d1", NOW)
    assert decision.reply.status == 200 and decision.reply.body == {}
    assert decision.doc is not None and decision.doc.deleted and decision.doc.key is None
    assert visible(decision.doc, "d1") is None
    assert sources.delete(decision.doc, "s1", "d1", NOW).reply.status == 404


@given(
    st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "memory": st.integers(0, 2**40),
                "cpu_quantity": st.integers(0, 65535),
                "agent_version": st.text(max_size=10),
                "name": st.text(min_size=1, max_size=10),
            },
        ),
        max_size=8,
    )
)
def test_any_sequence_of_updates_keeps_id_and_bumps_only_on_change(
    updates: list[dict[str, object]],
) -> None:
    doc = created()
    for fields in updates:
        decision = sources.register(doc, body(id="s1", **fields), "d1", new_id="n", now=NOW)
        assert decision.reply.status == 200 and decision.reply.body == {"id": "s1"}
        changed = any(doc.data.get(k) != v for k, v in fields.items())
        assert (decision.doc is not None) == changed == bool(decision.events)
        if decision.doc is not None:
            assert decision.doc.id == "s1"
            doc = decision.doc.evolve(version=doc.version + 1)
    assert all(doc.data[k] == v for k, v in (updates[-1] if updates else {}).items())

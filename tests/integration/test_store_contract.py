"""One contract, every adapter: the store behaviours the services rely on.

The MongoDB adapter runs this suite when REHOST_TEST_MONGODB_URL points at a server
(docker compose provides one); without it the suite is reported as skipped.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from shared.store import (
    AppliedMessage,
    Change,
    Conflict,
    Document,
    DuplicateKey,
    Query,
    Store,
    StoreUnavailable,
    open_store,
)
from shared.store import mongo_queries as q
from shared.store.base import APPLIED_MEMORY
from tests.support.proxy import FreezingProxy


def doc(doc_id: str | None = None, key: str | None = None, **data: object) -> Document:
    return Document(id=doc_id or uuid.uuid4().hex, domain_id="d1", key=key, data=dict(data))


def event(name: str) -> dict[str, object]:
    return {"event_id": uuid.uuid4().hex, "type": name}


class StoreContract:
    """Subclassed once per adapter; `store` yields an open, empty store."""

    collection = "things"

    async def test_create_then_get(self, store: Store) -> None:
        new = doc(key="k1", name="a")
        await store.save(self.collection, Change(new, 0))
        got = await store.get(self.collection, new.id)
        assert got is not None
        assert (got.version, got.key, got.data, got.domain_id) == (1, "k1", {"name": "a"}, "d1")
        assert (await store.get_by_key(self.collection, "k1")) == got
        assert await store.get(self.collection, "missing") is None

    async def test_prepare_makes_what_lists_need_and_may_run_again(self, store: Store) -> None:
        for _ in range(2):  # every start prepares again
            await store.prepare({self.collection: ("server_id", "state"), "others": ()})
        await store.save(self.collection, Change(doc(server_id="s1", state="x"), 0))
        page = await store.find(self.collection, Query(equals={"server_id": "s1", "state": "x"}))
        assert page.total == 1 and (await store.find("others", Query())).total == 0

    async def test_an_update_may_move_a_document_to_another_tenant(self, store: Store) -> None:
        new = doc()  # an operator re-binding an agent does this
        await store.save(self.collection, Change(new, 0))
        await store.save(self.collection, Change(new.evolve(domain_id="d2"), 1))
        got = await store.get(self.collection, new.id)
        assert got is not None and got.domain_id == "d2"
        found = await store.find(self.collection, Query(domain_id="d2"))
        assert [d.id for d in found.items] == [new.id]
        assert (await store.find(self.collection, Query(domain_id="d1"))).total == 0

    async def test_get_many_reads_the_ids_that_exist(self, store: Store) -> None:
        docs = [doc(name=f"n{i}") for i in range(1200)]  # beyond SQLite's parameter cap
        for d in docs:
            await store.save(self.collection, Change(d, 0))
        wanted = [d.id for d in docs[::2]] + ["missing"]
        got = await store.get_many(self.collection, wanted)
        assert sorted(got) == sorted(wanted[:-1])
        assert got[docs[0].id].data == {"name": "n0"} and got[docs[0].id].version == 1
        assert await store.get_many(self.collection, []) == {}

    async def test_create_twice_conflicts(self, store: Store) -> None:
        new = doc()
        await store.save(self.collection, Change(new, 0))
        with pytest.raises(Conflict):
            await store.save(self.collection, Change(new, 0))

    async def test_unique_key_is_enforced_by_the_store(self, store: Store) -> None:
        await store.save(self.collection, Change(doc(key="same"), 0))
        with pytest.raises(DuplicateKey):
            await store.save(self.collection, Change(doc(key="same"), 0))
        other = doc(key="other")
        await store.save(self.collection, Change(other, 0))
        with pytest.raises(DuplicateKey):
            await store.save(self.collection, Change(other.evolve(key="same"), 1))

    async def test_many_documents_may_have_no_key(self, store: Store) -> None:
        for _ in range(3):
            await store.save(self.collection, Change(doc(key=None), 0))

    async def test_update_is_compare_and_set_on_the_version(self, store: Store) -> None:
        new = doc(n=0)
        await store.save(self.collection, Change(new, 0))
        await store.save(self.collection, Change(new.evolve(data={"n": 1}), 1))
        with pytest.raises(Conflict):
            await store.save(self.collection, Change(new.evolve(data={"n": 99}), 1))
        got = await store.get(self.collection, new.id)
        assert got is not None and (got.version, got.data) == (2, {"n": 1})

    async def test_concurrent_writers_one_wins_each_version(self, store: Store) -> None:
        new = doc(n=0)
        await store.save(self.collection, Change(new, 0))

        async def bump(i: int) -> bool:
            try:
                await store.save(self.collection, Change(new.evolve(data={"n": i}), 1))
            except Conflict:
                return False
            return True

        results = await asyncio.gather(*(bump(i) for i in range(10)))
        assert sum(results) == 1

    async def test_events_and_applied_messages_are_saved_with_the_state(self, store: Store) -> None:
        new = doc()
        first, second = event("a"), event("b")
        await store.save(
            self.collection,
            Change(new, 0, (first,), AppliedMessage("m1", {"status": 200, "body": {"id": "x"}})),
        )
        await store.save(
            self.collection, Change(new, 1, (second,), AppliedMessage("m2", {"status": 200}))
        )
        got = await store.get(self.collection, new.id)
        assert got is not None
        assert got.reply_to("m1") == {"status": 200, "body": {"id": "x"}}
        assert got.reply_to("m3") is None
        [waiting] = await store.pending(self.collection, 10)
        assert waiting.doc_id == new.id
        assert [e["event_id"] for e in waiting.entries] == [first["event_id"], second["event_id"]]

    async def test_mark_published_keeps_events_added_meanwhile(self, store: Store) -> None:
        new = doc()
        first, second = event("a"), event("b")
        await store.save(self.collection, Change(new, 0, (first,)))
        await store.save(self.collection, Change(new, 1, (second,)))
        await store.mark_published(self.collection, {new.id: [str(first["event_id"])]})
        [waiting] = await store.pending(self.collection, 10)
        assert [e["event_id"] for e in waiting.entries] == [second["event_id"]]
        got = await store.get(self.collection, new.id)
        assert got is not None and got.version == 2  # publishing does not count as a change
        await store.mark_published(self.collection, {new.id: [str(second["event_id"])]})
        assert await store.pending(self.collection, 10) == []

    async def test_mark_published_covers_many_documents_in_one_call(self, store: Store) -> None:
        docs = [doc() for _ in range(3)]
        entries = [event(str(i)) for i in range(3)]
        for new, entry in zip(docs, entries, strict=True):
            await store.save(self.collection, Change(new, 0, (entry,)))
        await store.mark_published(
            self.collection,
            {
                new.id: [str(entry["event_id"])]
                for new, entry in zip(docs[:2], entries, strict=False)
            },
        )
        assert [p.doc_id for p in await store.pending(self.collection, 10)] == [docs[2].id]
        await store.mark_published(self.collection, {"no-such-document": ["x"]})
        assert len(await store.pending(self.collection, 10)) == 1

    async def test_lists_writes_and_published_marks_at_once_all_land(self, store: Store) -> None:
        """A service lists, writes and marks events published at the same moments (the
        SQLite adapter runs some of them on its thread, a mark on the loop's)."""
        published = [doc(n=i) for i in range(40)]
        entries = [event(str(i)) for i in range(40)]
        for new, entry in zip(published, entries, strict=True):
            await store.save(self.collection, Change(new, 0, (entry,)))
        later = [doc(n=100 + i) for i in range(40)]
        lists = [store.find(self.collection, Query(domain_id="d1", limit=5)) for _ in range(40)]
        marks = [
            store.mark_published(self.collection, {new.id: [str(entry["event_id"])]})
            for new, entry in zip(published, entries, strict=True)
        ]
        saves = [store.save(self.collection, Change(new, 0, (event("later"),))) for new in later]
        outcomes = await asyncio.gather(
            *(c for trio in zip(lists, marks, saves, strict=True) for c in trio)
        )
        pages = outcomes[::3]
        assert all(len(page.items) == 5 and 40 <= page.total <= 80 for page in pages)
        assert {p.doc_id for p in await store.pending(self.collection, 100)} == {
            d.id for d in later
        }
        assert (await store.find(self.collection, Query(domain_id="d1"))).total == 80

    async def test_pending_pages_by_document_with_all_of_its_entries(self, store: Store) -> None:
        docs = [doc() for _ in range(3)]
        for new in docs:
            await store.save(self.collection, Change(new, 0, (event("a"),)))
        await store.save(self.collection, Change(docs[0], 1, (event("b"), event("c"))))
        page = await store.pending(self.collection, 2)
        assert len(page) == 2 and sorted(len(p.entries) for p in page) == [1, 3]
        assert {p.doc_id for p in page} < {d.id for d in docs}

    async def test_applied_memory_is_bounded(self, store: Store) -> None:
        new = doc()
        await store.save(self.collection, Change(new, 0, (), AppliedMessage("m0", {})))
        for i in range(1, APPLIED_MEMORY + 5):
            await store.save(self.collection, Change(new, i, (), AppliedMessage(f"m{i}", {})))
        got = await store.get(self.collection, new.id)
        assert got is not None and len(got.applied) == APPLIED_MEMORY
        assert got.reply_to("m0") is None and got.reply_to(f"m{APPLIED_MEMORY + 4}") == {}

    async def test_find_filters_pages_and_sorts_newest_first(self, store: Store) -> None:
        docs = [
            doc(name=f"srv-{i}", state="waiting" if i % 2 else "error", ip=f"10.0.0.{i}")
            for i in range(6)
        ]
        for i, d in enumerate(docs):
            await store.save(self.collection, Change(d.evolve(created_at=1000.0 + i), 0))
        other = Document(id="other", domain_id="d2", data={"name": "srv-x"})
        await store.save(self.collection, Change(other, 0))

        page = await store.find(self.collection, Query(domain_id="d1", limit=2, offset=1))
        assert page.total == 6
        assert [d.id for d in page.items] == [docs[4].id, docs[3].id]
        waiting = await store.find(
            self.collection, Query(domain_id="d1", equals={"state": "waiting"})
        )
        assert {d.id for d in waiting.items} == {docs[1].id, docs[3].id, docs[5].id}
        named = await store.find(self.collection, Query(domain_id="d1", contains={"name": "v-2"}))
        assert [d.id for d in named.items] == [docs[2].id]
        tricky = await store.find(self.collection, Query(contains={"name": ".*"}))
        assert tricky.items == []

    async def test_deleted_documents_are_hidden_from_find(self, store: Store) -> None:
        new = doc(name="gone")
        await store.save(self.collection, Change(new, 0))
        await store.save(self.collection, Change(new.evolve(deleted=True), 1))
        assert (await store.find(self.collection, Query(domain_id="d1"))).total == 0
        everything = await store.find(self.collection, Query(domain_id="d1", include_deleted=True))
        assert everything.total == 1
        got = await store.get(self.collection, new.id)
        assert got is not None and got.deleted

    async def test_ping(self, store: Store) -> None:
        await store.ping()


class TestSqliteStore(StoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[Store]:
        store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
        await store.open()
        yield store
        await store.close()

    async def test_survives_reopening(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'again.db'}"
        store = open_store(url)
        await store.open()
        new = doc(name="kept")
        await store.save(self.collection, Change(new, 0, (event("e"),)))
        await store.close()
        again = open_store(url)
        await again.open()
        got = await again.get(self.collection, new.id)
        waiting = await again.pending(self.collection, 10)
        await again.close()
        assert got is not None and got.data == {"name": "kept"}
        assert [len(p.entries) for p in waiting] == [1]

    async def test_events_an_earlier_release_kept_in_the_document_are_still_published(
        self, tmp_path: Path
    ) -> None:
        # Until 2026-11 the SQLite adapter kept waiting events in an `outbox` column.
        path = tmp_path / "earlier.db"
        entries = [event("a"), event("b")]
        with sqlite3.connect(path) as db:
            db.execute(
                f"CREATE TABLE {self.collection} (id TEXT PRIMARY KEY, domain_id TEXT NOT NULL,"
                " key TEXT UNIQUE, version INTEGER NOT NULL, deleted INTEGER NOT NULL DEFAULT 0,"
                " created_at REAL NOT NULL, updated_at REAL NOT NULL, data TEXT NOT NULL,"
                " outbox TEXT NOT NULL DEFAULT '[]', applied TEXT NOT NULL DEFAULT '[]',"
                " pending INTEGER GENERATED ALWAYS AS (outbox != '[]') VIRTUAL)"
            )
            db.execute(
                f"INSERT INTO {self.collection} (id, domain_id, version, created_at, updated_at,"
                " data, outbox) VALUES ('old', 'd1', 3, 1.0, 2.0, '{\"name\": \"old\"}', ?)",
                [json.dumps(entries)],
            )
        store = open_store(f"sqlite:///{path}")
        await store.open()
        [waiting] = await store.pending(self.collection, 10)
        got = await store.get(self.collection, "old")
        await store.save(self.collection, Change(doc(name="new"), 0, (event("c"),)))
        await store.mark_published(self.collection, {"old": [str(entries[0]["event_id"])]})
        left = await store.pending(self.collection, 10)
        await store.close()
        assert waiting.doc_id == "old" and list(waiting.entries) == entries
        assert got is not None and got.version == 3 and got.data == {"name": "old"}
        assert len(left) == 2 and left[0].doc_id == "old"
        assert [e["event_id"] for e in left[0].entries] == [entries[1]["event_id"]]

    async def test_a_page_of_the_outbox_costs_the_same_whatever_waits_behind_it(
        self, store: Store
    ) -> None:
        """Counted in SQLite's own steps (not timed): a saturated run leaves thousands of
        events waiting, and reading the outbox whole for each page of a hundred slowed the
        relay as its backlog grew."""

        async def steps_of_a_page(waiting: int) -> int:
            await asyncio.gather(
                *(
                    store.save(self.collection, Change(doc(), 0, (event("e"),)))
                    for _ in range(waiting)
                )
            )
            steps = 0

            def count() -> int:
                nonlocal steps
                steps += 1
                return 0  # go on

            reader = store._reader  # type: ignore[attr-defined]
            reader.set_progress_handler(count, 100)
            page = await store.pending(self.collection, 10)
            reader.set_progress_handler(None, 0)
            assert len(page) == 10
            return steps

        few = await steps_of_a_page(20)
        many = await steps_of_a_page(2000)  # 2,020 waiting
        assert many < 2 * few, (few, many)

    async def test_a_field_matched_by_equality_gets_an_index(self, tmp_path: Path) -> None:
        path = tmp_path / "indexed.db"
        store = open_store(f"sqlite:///{path}")
        await store.open()
        await store.save(self.collection, Change(doc(server_id="s1"), 0))
        page = await store.find(self.collection, Query(equals={"server_id": "s1"}))
        await store.close()
        assert page.total == 1
        plan = sqlite3.connect(path).execute(
            f"EXPLAIN QUERY PLAN SELECT id FROM {self.collection} "
            "WHERE json_extract(data, '$.server_id') = 's1'"
        )
        assert "USING INDEX" in " ".join(str(row) for row in plan)

    async def test_the_wal_is_copied_into_the_database_beside_the_writer(
        self, tmp_path: Path
    ) -> None:
        # The database file grows only when a checkpoint copies the WAL into it; the writer's
        # own checkpoint waits for 40 MB of WAL, so a grown file is the checkpointer's work.
        path = tmp_path / "checkpointed.db"
        store = open_store(f"sqlite:///{path}")
        await store.open()
        before = path.stat().st_size
        padding = "x" * 6000
        await asyncio.gather(
            *(store.save(self.collection, Change(doc(pad=padding), 0)) for _ in range(300))
        )
        for _ in range(100):  # up to 5 s
            if path.stat().st_size > before + 1_000_000:
                break
            await asyncio.sleep(0.05)
        grown = path.stat().st_size - before
        await store.close()
        assert grown > 1_000_000, f"the database grew by {grown} bytes only"


class TestMongoStore(StoreContract):
    """On REHOST_TEST_MONGODB_URL's server, or on SecantusDB started for the run."""

    @pytest.fixture
    async def store(self, mongodb_url: str) -> AsyncIterator[Store]:
        database = f"rehost_test_{uuid.uuid4().hex[:8]}"
        base, _, query = mongodb_url.partition("?")
        store = open_store(f"{base.rstrip('/')}/{database}" + (f"?{query}" if query else ""))
        await store.open()
        yield store
        client = store._client  # type: ignore[attr-defined]
        await client.drop_database(database)
        await store.close()


async def test_a_mongodb_server_that_stops_answering_fails_operations_in_time(
    mongodb_url: str,
) -> None:
    """Not a handler held forever on a silent socket: StoreUnavailable, so the message is
    held and tried again (here with the URL's own timeoutMS, the adapter's default 10 s)."""
    address = urlsplit(mongodb_url)
    proxy = FreezingProxy(address.hostname or "127.0.0.1", address.port or 27017)
    port = await proxy.start()
    store = open_store(
        f"mongodb://127.0.0.1:{port}/rehost_frozen_{uuid.uuid4().hex[:8]}?timeoutMS=1500&directConnection=true"
    )
    await store.open()
    try:
        stored = doc()
        await store.save("things", Change(stored, 0))
        assert await store.get("things", stored.id) is not None
        proxy.freeze()
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.get("things", stored.id)
        assert time.monotonic() - started < 5
    finally:
        await store.close()
        await proxy.stop()


def test_unknown_store_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        open_store("postgres://x")


async def test_the_mongodb_adapter_makes_its_indexes_at_start_and_lists_use_them(
    mongodb_url: str,
) -> None:
    database = f"rehost_idx_{uuid.uuid4().hex[:8]}"
    store = open_store(f"{mongodb_url}/{database}")
    await store.open()
    try:
        client = store._client  # type: ignore[attr-defined]
        coll = client[database]["things"]
        # An earlier release's index (without the order) stays: its replicas hint it.
        await coll.create_index([("domain_id", 1), ("data.server_id", 1)])
        fields = {"things": ("server_id", "state")}
        await store.prepare(fields)
        await store.prepare(fields)  # idempotent: a restart makes them again
        keys = [list(index["key"]) async for index in await coll.list_indexes()]
        assert ["key"] in keys and ["pending"] in keys
        assert ["domain_id", "deleted", "created_at"] in keys
        ordered = ["domain_id", "data.server_id", "deleted", "created_at", "_id"]
        assert ordered in keys and ["data.state"] in keys
        assert ["domain_id", "data.server_id"] in keys
        for i in range(50):
            await store.save("things", Change(doc(server_id=f"s{i % 5}", state="waiting"), 0))
        page = await store.find(
            "things", Query(domain_id="d1", equals={"server_id": "s2"}, limit=3, offset=2)
        )
        assert page.total == 10 and len(page.items) == 3
        everything = await store.find("things", Query(domain_id="d1", equals={"server_id": "s2"}))
        newest_first = [(d.created_at, d.id) for d in everything.items]
        assert newest_first == sorted(newest_first, reverse=True)
        assert [d.id for d in page.items] == [d.id for d in everything.items[2:5]]
        # The list's own query, as the adapter sends it (filter, sort, hint).
        query = Query(domain_id="d1", equals={"server_id": "s7"})
        cursor = coll.find(q.find_filter(query)).sort(q.FIND_SORT).hint(q.find_hint(query))
        plan = json.dumps((await cursor.explain())["queryPlanner"]["winningPlan"], default=str)
        assert "IXSCAN" in plan and "domain_id_1_data.server_id_1_deleted_1" in plan, plan
    finally:
        await store._client.drop_database(database)  # type: ignore[attr-defined]
        await store.close()

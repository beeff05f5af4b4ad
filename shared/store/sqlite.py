"""The embedded default store: one SQLite file per service, one table per collection,
and beside each an outbox table of the events its documents have not yet published.

WAL with `synchronous=FULL`, so a committed write survives a crash before the
message that caused it is acked. One thread owns the writing connection; writes and
lists run there, so none interleaves with another (a commit that needs no sync, the outbox's
published marks, runs on the loop's thread when that one is idle, under the same lock:
the hand-off there and back cost more than the commit). Writes are committed in groups:
the writes waiting when a commit starts share one transaction (each in its own
savepoint, so one conflict fails only its own write) and one fsync, and each
caller returns only once that commit is durable.

The WAL is copied back into the database by a checkpointer of its own (a third
connection and thread), not by whichever commit happens to cross the WAL's size limit:
that commit waited for the copy and its fsync, a stall of 10–15 ms that every write
queued behind it shared. A passive checkpoint never blocks a writer; the writer's own
automatic checkpoint stays as the backstop, at a larger size.

Reads by id (and the outbox's) run on the event loop's own thread, on a second
connection: WAL lets it read what was last committed while the writer writes, and a
point read costs less than handing it to the writer's thread and back (the hand-off
was a quarter of a small service's CPU). A database in memory has one connection,
so there every read goes to the writer's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog
from opentelemetry import trace

from shared import jsoncodec as json
from shared.store import sqlite_queries as q
from shared.store.base import (
    Change,
    Conflict,
    Document,
    DuplicateKey,
    Page,
    Pending,
    Query,
    StoreUnavailable,
)
from shared.telemetry import span

log = structlog.get_logger(__name__)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
Write = Callable[[sqlite3.Connection], None]
MAX_GROUP = 256
CHECKPOINT_EVERY = 0.25  # seconds between the checkpointer's passive checkpoints
BACKSTOP_PAGES = 10_000  # the writer checkpoints itself only past this (about 40 MB)


def _migrate_outbox_column(conn: sqlite3.Connection, table: str) -> None:
    """Moves the entries a store of an earlier release kept in the documents' `outbox`
    column into the outbox table, so no event accepted before an upgrade is lost."""
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    if "outbox" not in columns:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            f"INSERT OR IGNORE INTO {table}_outbox (event_id, doc_id, entry) "
            f"SELECT json_extract(e.value, '$.event_id'), t.id, e.value "
            f"FROM {table} AS t, json_each(t.outbox) AS e WHERE t.outbox != '[]' "
            "ORDER BY t.updated_at, e.key"
        )
        conn.execute(f"UPDATE {table} SET outbox = '[]' WHERE outbox != '[]'")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _mapped(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError):
        return DuplicateKey(str(exc)) if ".key" in str(exc) else Conflict(str(exc))
    if isinstance(exc, sqlite3.Error):
        return StoreUnavailable(str(exc))
    return exc


def _traced(operation: str) -> Callable[[F], F]:
    """A client span around one store operation, inside the handler's trace."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def traced(self: Any, collection: str, *args: Any, **kwargs: Any) -> Any:
            with span(
                f"sqlite {operation} {collection}",
                trace.SpanKind.CLIENT,
                **{
                    "db.system": "sqlite",
                    "db.operation.name": operation,
                    "db.collection.name": collection,
                },
            ):
                return await method(self, collection, *args, **kwargs)

        return traced  # type: ignore[return-value]

    return wrap


def _first_waiting(conn: sqlite3.Connection, table: str, limit: int) -> list[str]:
    """The first `limit` documents to have entries waiting, in the order they were stored:
    the outbox is walked in that order and left as soon as they are found, so a page costs
    the same whatever waits behind it (a GROUP BY over the whole outbox cost a page 1 ms per
    thousand entries waiting, and a saturated run leaves ten thousand)."""
    found: dict[str, None] = {}
    walk = conn.execute(f"SELECT doc_id FROM {table}_outbox ORDER BY rowid")
    try:
        for (doc_id,) in walk:
            found[doc_id] = None
            if len(found) == limit:
                break
    finally:
        walk.close()  # left unfinished, it would hold its read snapshot (and the checkpoint)
    return list(found)


# -- the writes, run in the store's thread inside a group transaction ---------------------


def _add_outbox(conn: sqlite3.Connection, table: str, change: Change) -> None:
    if change.events:
        conn.executemany(
            f"INSERT INTO {table}_outbox (event_id, doc_id, entry) VALUES (?, ?, ?)",
            [(str(e["event_id"]), change.doc.id, json.dumps(e)) for e in change.events],
        )


def _insert(conn: sqlite3.Connection, table: str, change: Change, now: float) -> None:
    doc = change.doc
    conn.execute(
        f"INSERT INTO {table} ({q.COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            doc.id,
            doc.domain_id,
            doc.key,
            1,
            int(doc.deleted),
            doc.created_at or now,
            now,
            json.dumps(doc.data),
            q.applied_json([], change.applied),
        ],
    )
    _add_outbox(conn, table, change)


def _update(conn: sqlite3.Connection, table: str, change: Change, now: float) -> None:
    doc = change.doc
    row = conn.execute(
        f"SELECT applied FROM {table} WHERE id = ? AND version = ?",
        [doc.id, change.expected_version],
    ).fetchone()
    if row is None:
        raise Conflict(f"{table}/{doc.id} is not at version {change.expected_version}")
    conn.execute(
        f"UPDATE {table} SET domain_id = ?, key = ?, version = ?, deleted = ?, updated_at = ?, "
        "data = ?, applied = ? WHERE id = ?",
        [
            doc.domain_id,
            doc.key,
            change.expected_version + 1,
            int(doc.deleted),
            now,
            json.dumps(doc.data),
            q.applied_json(json.loads(row[0]), change.applied),
            doc.id,
        ],
    )
    _add_outbox(conn, table, change)


def _published(conn: sqlite3.Connection, table: str, event_ids: list[str]) -> None:
    conn.execute(
        f"DELETE FROM {table}_outbox WHERE event_id IN (SELECT value FROM json_each(?))",
        [json.dumps(event_ids)],
    )


def _commit_group(
    conn: sqlite3.Connection, writes: list[Write], durable: bool
) -> list[BaseException | None]:
    """One transaction for all `writes`; each in a savepoint, so each fails alone. Synced to
    disk before it returns when `durable`; otherwise with the next durable commit (WAL mode
    keeps either way the order of commits, so a crash can lose only its latest few)."""
    outcomes: list[BaseException | None] = []
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            conn.execute("SAVEPOINT w")
            try:
                write(conn)
            except (sqlite3.IntegrityError, Conflict) as exc:
                conn.execute("ROLLBACK TO w")
                outcomes.append(_mapped(exc))
            else:
                outcomes.append(None)
            conn.execute("RELEASE w")
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    return outcomes


class SqliteStore:
    def __init__(self, url: str) -> None:
        self.path = q.path_of(url)
        self._conn: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._tables: set[str] = set()
        self._indexes: set[str] = set()
        self._waiting: list[tuple[Write, asyncio.Future[None], bool]] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpoints = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._commits = 0  # group commits so far: the checkpointer acts only after new ones
        # Held by whichever thread uses the writing connection: the store's own thread, or
        # the loop's for a commit it makes itself (`_commit`).
        self._conn_lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._conn_lock:
                return fn(*args)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, locked)
        except BaseException as exc:
            raise _mapped(exc) from exc

    async def _commit(self, writes: list[Write], durable: bool) -> list[BaseException | None]:
        """Commits a group: in the store's thread when it must be synced (the fsync would
        hold the loop), on the loop's own thread when not and the connection is free. The
        hand-off to the thread and back costs more CPU than such a commit (on this project's
        machine, empty, 125 µs; the commit, a few WAL pages, about 60)."""
        if durable or not self._conn_lock.acquire(blocking=False):
            return await self._run(_commit_group, self.conn, writes, durable)
        try:
            return _commit_group(self.conn, writes, durable)
        finally:
            self._conn_lock.release()

    def _connect(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        if self.path != ":memory:":
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            reader = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA busy_timeout=1000")
            self._reader = reader

    async def open(self) -> None:
        await self._run(self._connect)
        self._writer = asyncio.create_task(self._write_groups(), name="sqlite-writer")
        if self.path != ":memory:":
            self._checkpointer = asyncio.create_task(self._checkpoint(), name="sqlite-checkpoint")

    async def _checkpoint(self) -> None:
        """Copies the WAL into the database now and then, beside the writer (not in its way)."""
        loop = asyncio.get_running_loop()
        conn = await loop.run_in_executor(
            self._checkpoints,
            functools.partial(
                sqlite3.connect, self.path, isolation_level=None, check_same_thread=False
            ),
        )
        checkpointed = 0
        try:
            while True:
                await asyncio.sleep(CHECKPOINT_EVERY)
                if self._commits == checkpointed:
                    continue  # nothing new in the WAL
                checkpointed = self._commits
                try:
                    await loop.run_in_executor(
                        self._checkpoints, conn.execute, "PRAGMA wal_checkpoint(PASSIVE)"
                    )
                except sqlite3.Error as exc:  # the backstop checkpoints meanwhile
                    log.warning("sqlite.checkpoint_failed", error=str(exc))
        finally:
            self._checkpoints.submit(conn.close)

    async def close(self) -> None:
        for task in (self._checkpointer, self._writer):
            if task is None:
                continue
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._conn is not None:
            await self._run(self._conn.close)
            self._conn = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("store is not open")
        return self._conn

    async def _table(self, collection: str) -> str:
        if not q.NAME.match(collection) or collection.endswith("_outbox"):
            raise ValueError(f"bad collection name {collection!r}")
        if collection not in self._tables:

            def create() -> None:
                for statement in q.schema(collection):
                    self.conn.execute(statement)
                _migrate_outbox_column(self.conn, collection)

            await self._run(create)
            self._tables.add(collection)
        return collection

    async def _write(self, write: Write, durable: bool = True) -> None:
        """Queues a write for the next group commit; returns once it is committed (durable
        unless it says otherwise)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, future, durable))
        self._wake.set()
        await future

    async def _write_groups(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
                writes = [write for write, _, _ in group]
                durable = any(durable for _, _, durable in group)
                try:
                    outcomes = await self._commit(writes, durable)
                    self._commits += 1
                except BaseException as exc:
                    for _, future, _ in group:
                        if not future.done():
                            future.set_exception(_mapped(exc))
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    continue
                for (_, future, _), outcome in zip(group, outcomes, strict=True):
                    if future.done():
                        continue
                    if outcome is None:
                        future.set_result(None)
                    else:
                        future.set_exception(outcome)

    async def ping(self) -> None:
        await self._run(lambda: self.conn.execute("SELECT 1").fetchone())

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A short read: on this thread when there is a reader connection."""
        if self._reader is None:
            return await self._run(fn, self.conn)
        try:
            return fn(self._reader)
        except BaseException as exc:
            raise _mapped(exc) from exc

    async def _one(self, sql: str, args: list[Any]) -> Document | None:
        row = await self._read(lambda conn: conn.execute(sql, args).fetchone())
        return q.row_to_doc(tuple(row)) if row else None

    @_traced("get")
    async def get(self, collection: str, doc_id: str) -> Document | None:
        table = await self._table(collection)
        return await self._one(f"SELECT {q.COLUMNS} FROM {table} WHERE id = ?", [doc_id])

    @_traced("get_by_key")
    async def get_by_key(self, collection: str, key: str) -> Document | None:
        table = await self._table(collection)
        return await self._one(f"SELECT {q.COLUMNS} FROM {table} WHERE key = ?", [key])

    @_traced("get_many")
    async def get_many(self, collection: str, doc_ids: Collection[str]) -> dict[str, Document]:
        table = await self._table(collection)
        ids = list(doc_ids)
        if not ids:
            return {}
        # The ids as one JSON parameter: SQLite caps the parameters of a statement.
        sql = f"SELECT {q.COLUMNS} FROM {table} WHERE id IN (SELECT value FROM json_each(?))"
        rows = await self._read(lambda conn: conn.execute(sql, [json.dumps(ids)]).fetchall())
        return {doc.id: doc for doc in (q.row_to_doc(tuple(r)) for r in rows)}

    async def prepare(self, fields: Mapping[str, Collection[str]]) -> None:
        for collection, names in fields.items():
            await self._field_indexes(await self._table(collection), names)

    async def _field_indexes(self, table: str, names: Iterable[str]) -> None:
        """An index on each field a query matches by equality, made the first time one does:
        without it every such query reads the whole table."""
        for name in names:
            index, statements = q.field_index(table, name)
            if index not in self._indexes:
                for sql in statements:
                    await self._run(lambda sql=sql: self.conn.execute(sql))
                self._indexes.add(index)

    @_traced("find")
    async def find(self, collection: str, query: Query) -> Page:
        table = await self._table(collection)
        await self._field_indexes(table, query.equals)
        where, args = q.where(query)

        def read() -> tuple[int, list[Any]]:
            (total,) = self.conn.execute(f"SELECT count(*) FROM {table}{where}", args).fetchone()
            rows = self.conn.execute(
                f"SELECT {q.COLUMNS} FROM {table}{where} "
                "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?",
                [*args, query.limit, query.offset],
            ).fetchall()
            return total, rows

        total, rows = await self._run(read)
        return Page(items=[q.row_to_doc(tuple(r)) for r in rows], total=total)

    @_traced("save")
    async def save(self, collection: str, change: Change) -> None:
        table = await self._table(collection)
        write = _insert if change.expected_version == 0 else _update
        now = time.time()
        await self._write(lambda conn: write(conn, table, change, now))

    @_traced("pending")
    async def pending(self, collection: str, limit: int) -> list[Pending]:
        table = await self._table(collection)
        # The first `limit` documents to have entries waiting, each with all of its
        # entries, in the order they were stored.

        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            doc_ids = _first_waiting(conn, table, limit)
            sql = (
                f"SELECT doc_id, entry FROM {table}_outbox "
                "WHERE doc_id IN (SELECT value FROM json_each(?)) ORDER BY rowid"
            )
            return conn.execute(sql, [json.dumps(doc_ids)]).fetchall() if doc_ids else []

        rows = await self._read(read)
        entries: dict[str, list[dict[str, Any]]] = {}
        for doc_id, entry in rows:
            entries.setdefault(doc_id, []).append(json.loads(entry))
        return [Pending(doc_id, tuple(found)) for doc_id, found in entries.items()]

    @_traced("mark_published")
    async def mark_published(self, collection: str, published: Mapping[str, list[str]]) -> None:
        table = await self._table(collection)
        event_ids = [event_id for ids in published.values() for event_id in ids]
        if event_ids:
            # Not synced on its own: lost to a crash, the events are published again, which
            # delivery at least once allows (integrators dedupe by event_id).
            await self._write(lambda conn: _published(conn, table, event_ids), durable=False)

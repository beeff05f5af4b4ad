"""The embedded default store: one SQLite file per service, one table per collection.

WAL with `synchronous=FULL`, so a committed write survives a crash before the
message that caused it is acked.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
from opentelemetry import trace

from shared.store.base import (
    APPLIED_MEMORY,
    AppliedMessage,
    Change,
    Conflict,
    Document,
    DuplicateKey,
    Page,
    Query,
    StoreUnavailable,
)
from shared.telemetry import tracer

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")
COLUMNS = "id, domain_id, key, version, deleted, created_at, updated_at, data, outbox, applied"


def _schema(table: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS {table} (
            id TEXT PRIMARY KEY,
            domain_id TEXT NOT NULL,
            key TEXT UNIQUE,
            version INTEGER NOT NULL,
            deleted INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            data TEXT NOT NULL,
            outbox TEXT NOT NULL DEFAULT '[]',
            applied TEXT NOT NULL DEFAULT '[]',
            pending INTEGER GENERATED ALWAYS AS (outbox != '[]') VIRTUAL
        )""",
        f"CREATE INDEX IF NOT EXISTS {table}_by_domain ON {table} (domain_id, deleted, created_at)",
        f"CREATE INDEX IF NOT EXISTS {table}_pending ON {table} (pending) WHERE pending",
    ]


def _path(url: str) -> str:
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    return path or ":memory:"


def _row_to_doc(row: sqlite3.Row | tuple[Any, ...]) -> Document:
    doc_id, domain_id, key, version, deleted, created, updated, data, outbox, applied = row
    return Document(
        id=doc_id,
        domain_id=domain_id,
        key=key,
        version=version,
        deleted=bool(deleted),
        created_at=created,
        updated_at=updated,
        data=json.loads(data),
        outbox=tuple(json.loads(outbox)),
        applied=tuple(AppliedMessage(**a) for a in json.loads(applied)),
    )


def _applied_json(previous: Iterable[dict[str, Any]], new: AppliedMessage | None) -> str:
    applied = list(previous)
    if new is not None:
        applied.append({"message_id": new.message_id, "reply": new.reply})
    return json.dumps(applied[-APPLIED_MEMORY:])


def _where(query: Query) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    args: list[Any] = []
    if query.domain_id is not None:
        clauses.append("domain_id = ?")
        args.append(query.domain_id)
    if not query.include_deleted:
        clauses.append("deleted = 0")
    for name, value in query.equals.items():
        clauses.append(f"json_extract(data, '$.{_field(name)}') = ?")
        args.append(value)
    for name, value in query.contains.items():
        clauses.append(f"instr(json_extract(data, '$.{_field(name)}'), ?) > 0")
        args.append(value)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", args


def _traced(operation: str) -> Callable[[F], F]:
    """A client span around one store operation, inside the handler's trace."""

    def wrap(method: F) -> F:
        @functools.wraps(method)
        async def traced(self: Any, collection: str, *args: Any, **kwargs: Any) -> Any:
            with tracer("rehost.store").start_as_current_span(
                f"sqlite {operation} {collection}",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "db.system": "sqlite",
                    "db.operation.name": operation,
                    "db.collection.name": collection,
                },
            ):
                return await method(self, collection, *args, **kwargs)

        return traced  # type: ignore[return-value]

    return wrap


def _field(name: str) -> str:
    if not _FIELD.match(name):
        raise ValueError(f"bad field name {name!r}")
    return name


class SqliteStore:
    def __init__(self, url: str) -> None:
        self.path = _path(url)
        self._db: aiosqlite.Connection | None = None
        self._tables: set[str] = set()
        # One connection serves the whole process: a transaction must not interleave
        # with another task's statements, which would see or join its uncommitted writes.
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self._db.execute("PRAGMA journal_mode=WAL")
            await self._db.execute("PRAGMA synchronous=FULL")
            await self._db.execute("PRAGMA busy_timeout=5000")
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise StoreUnavailable("store is not open")
        return self._db

    async def _table(self, collection: str) -> str:
        if not _NAME.match(collection):
            raise ValueError(f"bad collection name {collection!r}")
        if collection not in self._tables:
            async with self._errors():
                for statement in _schema(collection):
                    await self.db.execute(statement)
            self._tables.add(collection)
        return collection

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            async with self._lock:
                yield
        except sqlite3.IntegrityError as exc:
            if ".key" in str(exc):
                raise DuplicateKey(str(exc)) from exc
            raise Conflict(str(exc)) from exc
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(str(exc)) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        async with self._errors():
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            await self.db.execute("COMMIT")

    async def ping(self) -> None:
        async with self._errors():
            await self.db.execute("SELECT 1")

    async def _one(self, sql: str, args: list[Any]) -> Document | None:
        async with self._errors(), self.db.execute(sql, args) as cursor:
            row = await cursor.fetchone()
        return _row_to_doc(tuple(row)) if row else None

    @_traced("get")
    async def get(self, collection: str, doc_id: str) -> Document | None:
        table = await self._table(collection)
        return await self._one(f"SELECT {COLUMNS} FROM {table} WHERE id = ?", [doc_id])

    @_traced("get_by_key")
    async def get_by_key(self, collection: str, key: str) -> Document | None:
        table = await self._table(collection)
        return await self._one(f"SELECT {COLUMNS} FROM {table} WHERE key = ?", [key])

    @_traced("find")
    async def find(self, collection: str, query: Query) -> Page:
        table = await self._table(collection)
        where, args = _where(query)
        async with self._errors():
            async with self.db.execute(f"SELECT count(*) FROM {table}{where}", args) as cursor:
                (total,) = await cursor.fetchone() or (0,)
            sql = (
                f"SELECT {COLUMNS} FROM {table}{where} "
                "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
            )
            async with self.db.execute(sql, [*args, query.limit, query.offset]) as cursor:
                rows = await cursor.fetchall()
        return Page(items=[_row_to_doc(tuple(r)) for r in rows], total=total)

    @_traced("save")
    async def save(self, collection: str, change: Change) -> None:
        table = await self._table(collection)
        doc = change.doc
        now = time.time()
        async with self._transaction():
            if change.expected_version == 0:
                await self.db.execute(
                    f"INSERT INTO {table} ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        doc.id,
                        doc.domain_id,
                        doc.key,
                        change.expected_version + 1,
                        int(doc.deleted),
                        doc.created_at or now,
                        now,
                        json.dumps(doc.data),
                        json.dumps(list(change.events)),
                        _applied_json([], change.applied),
                    ],
                )
                return
            sql = f"SELECT outbox, applied FROM {table} WHERE id = ? AND version = ?"
            async with self.db.execute(sql, [doc.id, change.expected_version]) as cursor:
                row = await cursor.fetchone()
            if row is None:
                raise Conflict(f"{collection}/{doc.id} is not at version {change.expected_version}")
            outbox = [*json.loads(row[0]), *change.events]
            await self.db.execute(
                f"UPDATE {table} SET key = ?, version = ?, deleted = ?, updated_at = ?, "
                "data = ?, outbox = ?, applied = ? WHERE id = ?",
                [
                    doc.key,
                    change.expected_version + 1,
                    int(doc.deleted),
                    now,
                    json.dumps(doc.data),
                    json.dumps(outbox),
                    _applied_json(json.loads(row[1]), change.applied),
                    doc.id,
                ],
            )

    @_traced("with_outbox")
    async def with_outbox(self, collection: str, limit: int) -> list[Document]:
        table = await self._table(collection)
        sql = f"SELECT {COLUMNS} FROM {table} WHERE pending LIMIT ?"
        async with self._errors(), self.db.execute(sql, [limit]) as cursor:
            rows = await cursor.fetchall()
        return [_row_to_doc(tuple(r)) for r in rows]

    async def outbox_size(self, collection: str) -> int:
        table = await self._table(collection)
        sql = f"SELECT coalesce(sum(json_array_length(outbox)), 0) FROM {table} WHERE pending"
        async with self._errors(), self.db.execute(sql) as cursor:
            (size,) = await cursor.fetchone() or (0,)
        return int(size)

    @_traced("mark_published")
    async def mark_published(self, collection: str, doc_id: str, event_ids: list[str]) -> None:
        table = await self._table(collection)
        done = set(event_ids)
        async with self._transaction():
            sql = f"SELECT outbox FROM {table} WHERE id = ?"
            async with self.db.execute(sql, [doc_id]) as cursor:
                row = await cursor.fetchone()
            if row is None:
                return
            left = [e for e in json.loads(row[0]) if e.get("event_id") not in done]
            await self.db.execute(
                f"UPDATE {table} SET outbox = ? WHERE id = ?", [json.dumps(left), doc_id]
            )

"""The MongoDB store, through PyMongo's native async API (`AsyncMongoClient`).

Kept thin: every filter and update comes from `mongo_queries`, which is unit-tested;
this module only sends them and maps driver errors onto the store's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from pymongo import AsyncMongoClient, UpdateOne
from pymongo.errors import (
    ConnectionFailure,
    DuplicateKeyError,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from shared.store import mongo_queries as q
from shared.store.base import (
    Change,
    Conflict,
    Document,
    DuplicateKey,
    Page,
    Pending,
    Query,
    StoreRejected,
    StoreUnavailable,
)

OPERATION_TIMEOUT_MS = 10_000

# Server error codes that say "not now" (shutdown, elections, a node catching up), not
# "never": the operation may succeed on a later try.
TRANSIENT_CODES = frozenset(
    {6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13388, 13435, 13436, 64, 50}
)


def classified(exc: Exception) -> Exception:
    """A connection or election error holds the message until the store answers again
    (StoreUnavailable); an error caused by the document itself (too deep, too large, a
    bad key) is the message's fault: retried, then dead-lettered by the delivery limit."""
    labelled = isinstance(exc, PyMongoError) and (
        exc.has_error_label("RetryableWriteError")
        or exc.has_error_label("TransientTransactionError")
    )
    transient = (
        isinstance(exc, ConnectionFailure | ExecutionTimeout | WTimeoutError)
        or (isinstance(exc, PyMongoError) and exc.timeout)  # client-side, whatever its class
        or labelled
        or (isinstance(exc, OperationFailure) and exc.code in TRANSIENT_CODES)
    )
    if transient:
        return StoreUnavailable(str(exc))
    return StoreRejected(str(exc))


class MongoStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._indexed: set[str] = set()
        self._indexed_fields: set[tuple[str, str]] = set()

    async def open(self) -> None:
        # A server that stops answering mid-operation must not hold a handler forever
        # (pymongo waits on a socket without end by default): past OPERATION_TIMEOUT_MS an
        # operation fails as StoreUnavailable and its message is held and tried again. A
        # `timeoutMS` in the URL wins.
        options: dict[str, Any] = {"serverSelectionTimeoutMS": 3000, "tz_aware": True}
        if "timeoutms=" not in self.url.lower():
            options["timeoutMS"] = OPERATION_TIMEOUT_MS
        self._client = AsyncMongoClient(self.url, **options)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        try:
            yield
        except DuplicateKeyError as exc:
            if "key" in ((exc.details or {}).get("keyPattern") or {}):
                raise DuplicateKey(str(exc)) from exc
            raise Conflict(str(exc)) from exc
        except PyMongoError as exc:
            raise classified(exc) from exc

    async def _coll(self, collection: str) -> Any:
        if self._client is None:
            raise StoreUnavailable("store is not open")
        coll = self._client.get_default_database("rehost")[collection]
        if collection not in self._indexed:
            async with self._errors():
                for keys, options in q.INDEXES:
                    await coll.create_index(keys, **options)
            self._indexed.add(collection)
        return coll

    async def prepare(self, fields: Mapping[str, Collection[str]]) -> None:
        for collection, names in fields.items():
            await self._field_indexes(await self._coll(collection), collection, names)

    async def _field_indexes(self, coll: Any, collection: str, names: Iterable[str]) -> None:
        """An index on each field a query matches by equality (as the SQLite adapter)."""
        async with self._errors():
            for name in names:
                if (collection, name) not in self._indexed_fields:
                    for keys in q.field_indexes(name):
                        await coll.create_index(keys)
                    self._indexed_fields.add((collection, name))

    async def ping(self) -> None:
        if self._client is None:
            raise StoreUnavailable("store is not open")
        async with self._errors():
            await self._client.admin.command("ping")

    async def get(self, collection: str, doc_id: str) -> Document | None:
        coll = await self._coll(collection)
        async with self._errors():
            raw = await coll.find_one({"_id": doc_id})
        return q.to_document(raw) if raw else None

    async def get_many(self, collection: str, doc_ids: Collection[str]) -> dict[str, Document]:
        coll = await self._coll(collection)
        if not doc_ids:
            return {}
        async with self._errors():
            raws = await coll.find({"_id": {"$in": list(doc_ids)}}).to_list(None)
        return {doc.id: doc for doc in map(q.to_document, raws)}

    async def get_by_key(self, collection: str, key: str) -> Document | None:
        coll = await self._coll(collection)
        async with self._errors():
            raw = await coll.find_one({"key": key})
        return q.to_document(raw) if raw else None

    async def find(self, collection: str, query: Query) -> Page:
        coll = await self._coll(collection)
        flt = q.find_filter(query)
        await self._field_indexes(coll, collection, query.equals)  # any not made at start
        async with self._errors():
            total = await coll.count_documents(flt)
            cursor = coll.find(flt).sort(q.FIND_SORT).skip(query.offset).limit(query.limit)
            if (hint := q.find_hint(query)) is not None:
                cursor = cursor.hint(hint)
            items = [q.to_document(raw) async for raw in cursor]
        return Page(items=items, total=total)

    async def save(self, collection: str, change: Change) -> None:
        coll = await self._coll(collection)
        now = time.time()
        async with self._errors():
            if change.expected_version == 0:
                await coll.insert_one(q.insert_document(change, now))
                return
            result = await coll.update_one(q.update_filter(change), q.update_spec(change, now))
        if result.matched_count == 0:
            raise Conflict(
                f"{collection}/{change.doc.id} is not at version {change.expected_version}"
            )

    async def pending(self, collection: str, limit: int) -> list[Pending]:
        coll = await self._coll(collection)
        async with self._errors():
            found = coll.find(q.OUTBOX_FILTER, projection={"outbox": 1}).limit(limit)
            return [Pending(raw["_id"], tuple(raw.get("outbox", []))) async for raw in found]

    async def mark_published(self, collection: str, published: Mapping[str, list[str]]) -> None:
        if not published:
            return
        coll = await self._coll(collection)
        updates = [
            UpdateOne({"_id": doc_id}, q.mark_published_spec(ids))
            for doc_id, ids in published.items()
        ]
        async with self._errors():
            await coll.bulk_write(updates, ordered=False)

"""The store port: a small async document store with two adapters.

`open_store(url)` picks the adapter by URL scheme: `sqlite:///path` (the embedded
default) or `mongodb://…` (deployments).
"""

from shared.store.base import (
    AppliedMessage,
    Change,
    Conflict,
    Document,
    DuplicateKey,
    Page,
    Pending,
    Query,
    Store,
    StoreRejected,
    StoreUnavailable,
    find_all,
)


def open_store(url: str) -> Store:
    if url.startswith("sqlite:"):
        from shared.store.sqlite import SqliteStore

        return SqliteStore(url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from shared.store.mongo import MongoStore

        return MongoStore(url)
    raise ValueError(f"unsupported store URL scheme: {url.split(':', 1)[0]!r}")


__all__ = [
    "AppliedMessage",
    "Change",
    "Conflict",
    "Document",
    "DuplicateKey",
    "Page",
    "Pending",
    "Query",
    "Store",
    "StoreRejected",
    "StoreUnavailable",
    "find_all",
    "open_store",
]

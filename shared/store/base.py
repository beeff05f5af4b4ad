"""The store interface every adapter implements, and the values it speaks in.

A service keeps each aggregate as one `Document`. The document carries the ids of
the last messages applied to it (`applied`, with the reply each got), and its
events wait with it until published (MongoDB: inside the document; SQLite: in an
outbox table written in the same transaction), so that a state change, its events
and its duplicate guard are one atomic write on every adapter, MongoDB without a
replica set included (README, Reliability). The relay reads the
waiting events through `pending`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from shared import jsoncodec

# How many message ids a document remembers for duplicate detection. Redelivery
# happens within seconds; 64 later changes to one aggregate in that time is far off.
APPLIED_MEMORY = 64


class Conflict(Exception):
    """The expected version did not match, or the id or unique key is taken."""


class DuplicateKey(Conflict):
    """Another document already holds this unique key."""


class StoreUnavailable(Exception):
    """The store cannot be reached or is locked; the operation may succeed later."""


class StoreRejected(Exception):
    """The store refuses this write for what it holds (nesting, size, a bad key): trying
    again will not help, so the message is dead-lettered after its delivery limit."""


@dataclass(frozen=True)
class AppliedMessage:
    message_id: str
    reply: dict[str, Any]


# An id that JSON writes as it is, between quotes: printable ASCII but `"` and `\`.
_VERBATIM_IN_JSON = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")


class AppliedMessages(Sequence[AppliedMessage]):
    """A document's last applied messages, its duplicate guard. An adapter that keeps them as
    JSON hands over the text, parsed only when asked for an id it holds: every write reads
    its document and asks for the message's id, which a first delivery is not, and parsing
    64 entries costs a read 75 µs (a plain search, 1)."""

    __slots__ = ("_items", "_text")

    def __init__(self, items: Iterable[AppliedMessage] = (), *, text: str | None = None) -> None:
        self._text = text
        self._items = None if text is not None else tuple(items)

    def reply_to(self, message_id: str) -> dict[str, Any] | None:
        if (
            self._text is not None
            and _VERBATIM_IN_JSON.fullmatch(message_id)
            and f'"{message_id}"' not in self._text
        ):
            return None
        for applied in self._parsed():
            if applied.message_id == message_id:
                return applied.reply
        return None

    def _parsed(self) -> tuple[AppliedMessage, ...]:
        if self._items is None:
            self._items = tuple(AppliedMessage(**a) for a in jsoncodec.loads(self._text or "[]"))
        return self._items

    def __getitem__(self, index: Any) -> Any:
        return self._parsed()[index]

    def __len__(self) -> int:
        return len(self._parsed())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    __hash__ = None  # type: ignore[assignment]  # mutable replies: as a tuple of dicts is


@dataclass(frozen=True)
class Document:
    id: str
    domain_id: str
    data: dict[str, Any]
    version: int = 0
    key: str | None = None
    deleted: bool = False
    created_at: float = 0.0
    updated_at: float = 0.0
    applied: AppliedMessages = field(default_factory=AppliedMessages)

    def reply_to(self, message_id: str) -> dict[str, Any] | None:
        return self.applied.reply_to(message_id)

    def evolve(self, **changes: Any) -> Document:
        return replace(self, **changes)


@dataclass(frozen=True)
class Change:
    """One atomic write: the document's new state, its new events, and the message applied.

    `expected_version` 0 means "create": it fails if the id or key exists.
    """

    doc: Document
    expected_version: int
    events: tuple[dict[str, Any], ...] = ()
    applied: AppliedMessage | None = None


@dataclass(frozen=True)
class Query:
    domain_id: str | None = None
    equals: dict[str, Any] = field(default_factory=dict)
    contains: dict[str, str] = field(default_factory=dict)
    include_deleted: bool = False
    limit: int = 50
    offset: int = 0


@dataclass(frozen=True)
class Pending:
    """One document's outbox entries not yet published (the relay needs nothing else)."""

    doc_id: str
    entries: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Page:
    items: list[Document]
    total: int


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raises StoreUnavailable when the store cannot serve."""

    async def prepare(self, fields: Mapping[str, Collection[str]]) -> None:
        """Makes, idempotently, each collection and every index it relies on: identity
        keys, the outbox's, the lists' order, and one for each field its queries match on
        by equality (`fields`, by collection). Run at start."""

    async def get(self, collection: str, doc_id: str) -> Document | None: ...

    async def get_by_key(self, collection: str, key: str) -> Document | None: ...

    async def get_many(self, collection: str, doc_ids: Collection[str]) -> dict[str, Document]:
        """The documents of these ids that exist, by id, in one read."""

    async def find(self, collection: str, query: Query) -> Page:
        """Matching documents, newest first."""

    async def save(self, collection: str, change: Change) -> None:
        """Writes the change atomically or raises Conflict; never half of it."""

    async def pending(self, collection: str, limit: int) -> list[Pending]:
        """The outboxes of documents that have entries not yet published."""

    async def mark_published(self, collection: str, published: Mapping[str, list[str]]) -> None:
        """Removes these entries (event ids by document id) from the outboxes, in one write.
        Entries added meanwhile stay."""


async def find_all(store: Store, collection: str, query: Query, page: int = 500) -> list[Document]:
    """Every matching document, read page by page before anything is done with them (a
    change made meanwhile would move the pages under a reader that acts as it goes)."""
    found: list[Document] = []
    while True:
        chunk = await store.find(collection, replace(query, limit=page, offset=len(found)))
        found.extend(chunk.items)
        if len(chunk.items) < page or len(found) >= chunk.total:
            return found

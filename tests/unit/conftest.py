"""Fixtures of the unit tests: the in-memory SQLite store, in place of a service's file."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.store import Store, open_store


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    store = open_store("sqlite:///:memory:")
    await store.open()
    yield store
    await store.close()

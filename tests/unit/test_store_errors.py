"""MongoDB errors classified: an outage holds the message, a bad document does not."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    DocumentTooLarge,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from shared.store import StoreRejected, StoreUnavailable
from shared.store.mongo import classified


@pytest.mark.parametrize(
    "error",
    [
        AutoReconnect("connection reset"),
        ServerSelectionTimeoutError("no primary"),
        NotPrimaryError("stepped down"),
        OperationFailure("shutting down", code=91),
        OperationFailure("stepped down", code=189),
        OperationFailure("retry me", code=1, details={"errorLabels": ["RetryableWriteError"]}),
    ],
    ids=repr,
)
def test_an_outage_or_an_election_holds_the_message(error: Exception) -> None:
    assert isinstance(classified(error), StoreUnavailable)


@pytest.mark.parametrize(
    "error",
    [
        WriteError("Document exceeds maximum nesting depth of 100", code=15),
        DocumentTooLarge("BSON document too large"),
        OperationFailure("$-prefixed field name", code=52),
    ],
    ids=repr,
)
def test_an_error_caused_by_the_document_is_the_messages_fault(error: Exception) -> None:
    assert isinstance(classified(error), StoreRejected)

"""Message and step ids: the fast builders must give exactly what `uuid` gave, or a message
redelivered across an upgrade would get a new id and be applied twice."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import pytest

from shared.envelope import decode, derived_id, new_id


@pytest.mark.parametrize("message_id", ["", "m-1", uuid.uuid4().hex, "héllo ✓", "x" * 500])
@pytest.mark.parametrize("step", ["record", "item-0", "result"])
def test_a_derived_id_is_the_uuid5_of_earlier_releases(message_id: str, step: str) -> None:
    expected = uuid.uuid5(uuid.NAMESPACE_URL, f"rehost:{message_id}:{step}").hex
    assert derived_id(message_id, step) == expected


def test_a_new_id_is_a_random_uuid4() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    for made in ids:
        parsed = uuid.UUID(hex=made)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == made


def test_a_message_without_an_id_is_named_by_its_body_as_before() -> None:
    body = b'{"server_id": "s1"}'
    message = SimpleNamespace(
        headers={},
        routing_key="k",
        type=None,
        message_id=None,
        body=body,
        reply_to=None,
        correlation_id=None,
        user_id=None,
    )
    incoming = decode(message)  # type: ignore[arg-type]
    assert incoming.message_id == uuid.uuid5(uuid.NAMESPACE_OID, body.hex()).hex

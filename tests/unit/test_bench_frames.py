"""The message-cost bench's floor publishes what the services publish: its hand-encoded
frames are read back by pamqp as the same method and properties, and its hand-written
reader of content headers reads what pamqp encodes."""

from __future__ import annotations

from typing import Any

from pamqp import commands, frame, header

from bench.message_cost import publish_frames, read_properties
from shared.envelope import build_message

BODY = b'{"type":"command.result_recorded"}'


def frames_of(data: bytes) -> list[Any]:
    found: list[Any] = []
    at = 0
    while at < len(data):
        size, _, value = frame.unmarshal(data[at:])
        found.append(value)
        at += size
    return found


def test_hand_encoded_publish_reads_back_as_the_services_message() -> None:
    method, content, body = frames_of(publish_frames("q.name", "abc123", BODY))
    ours = build_message(BODY, "q.name", domain_id="bench-domain", message_id="abc123")

    assert isinstance(method, commands.Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory) == ("", "q.name", False)
    assert isinstance(content, header.ContentHeader) and content.body_size == len(BODY)
    read = content.properties
    for name in ("content_type", "delivery_mode", "message_id", "headers"):
        assert getattr(read, name) == getattr(ours.properties, name), name
    assert read.message_type == "q.name" and read.timestamp is not None
    assert body.value == BODY


def test_the_hand_reader_reads_pamqps_properties() -> None:
    properties = commands.Basic.Properties(
        content_type="application/json",
        headers={"domain_id": "d-1", "schema_version": 1},
        delivery_mode=2,
        correlation_id="c-1",
        reply_to="amq.rabbitmq.reply-to",
        message_id="m-1",
        message_type="sms.source.register",
    )
    encoded = frame.marshal(header.ContentHeader(0, 3, properties), 1)

    read = read_properties(encoded[7 + 12 : -1])  # past the frame's and the header's heads

    assert read == {
        "content_type": "application/json",
        "headers": {"domain_id": "d-1", "schema_version": 1},
        "delivery_mode": 2,
        "correlation_id": "c-1",
        "reply_to": "amq.rabbitmq.reply-to",
        "message_id": "m-1",
        "type": "sms.source.register",
    }

"""The message envelope (README, Messages): AMQP properties and headers every message carries.

Commands and events are JSON bodies (pydantic models of the owning service); the
envelope carries what is not business data: ids, type, tenant, schema version,
trace context and, for requests, where to reply.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pydantic import BaseModel, Field

from shared import jsoncodec
from shared.telemetry import inject_headers

SCHEMA_VERSION = 1
H_DOMAIN = "domain_id"
H_ACTOR = "actor"
H_SCHEMA = "schema_version"
H_REASON = "x-rehost-reason"
H_DELIVERY_COUNT = "x-delivery-count"
M = TypeVar("M", bound=BaseModel)


# Ids are made several times per message on every hot path; building them as bytes
# costs a third of going through `uuid.UUID` objects, and gives the same hex.
_URL, _OID = uuid.NAMESPACE_URL.bytes, uuid.NAMESPACE_OID.bytes


def _hex(raw: bytes, version: int) -> str:
    """RFC 4122's layout of 16 bytes: the version's nibble and the variant's bits set."""
    b = bytearray(raw[:16])
    b[6] = (b[6] & 0x0F) | (version << 4)
    b[8] = (b[8] & 0x3F) | 0x80
    return b.hex()


def new_id() -> str:
    """A random id, as `uuid.uuid4().hex`."""
    return _hex(os.urandom(16), 4)


def _uuid5(namespace: bytes, name: str) -> str:
    """`uuid.uuid5(namespace, name).hex`: ids derived before this stay the same."""
    return _hex(hashlib.sha1(namespace + name.encode()).digest(), 5)


def derived_id(message_id: str, step: str) -> str:
    """A stable id for one step of handling a message: the same on every redelivery."""
    return _uuid5(_URL, f"rehost:{message_id}:{step}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Reply(BaseModel):
    """What a service answers a request with: the HTTP status and body to return."""

    status: int
    body: Any = Field(default_factory=dict)


class Event(BaseModel):
    """Body of every message on `rehost.events`."""

    event_id: str
    type: str
    domain_id: str
    aggregate_id: str
    aggregate_version: int
    occurred_at: datetime
    schema_version: int = SCHEMA_VERSION
    data: dict[str, Any]


def build_message(
    body: bytes,
    routing_key: str,
    *,
    domain_id: str | None = None,
    message_id: str | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    headers: dict[str, Any] | None = None,
    timestamp: datetime | None = None,
) -> aio_pika.Message:
    all_headers: dict[str, Any] = {H_SCHEMA: SCHEMA_VERSION, **(headers or {})}
    if domain_id is not None:
        all_headers[H_DOMAIN] = domain_id
    inject_headers(all_headers)
    return aio_pika.Message(
        body,
        message_id=message_id or new_id(),
        type=routing_key,
        content_type="application/json",
        timestamp=timestamp or utcnow(),
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        correlation_id=correlation_id,
        reply_to=reply_to,
        headers=all_headers,
    )


def event_message(entry: dict[str, Any]) -> aio_pika.Message:
    """The message for an event as an outbox keeps it: an `Event` dumped in JSON mode
    (and validated then), so it is sent as it is rather than parsed again."""
    body = {name: entry[name] for name in Event.model_fields if name in entry}
    return build_message(
        jsoncodec.dump_bytes(body),
        str(entry["type"]),
        domain_id=str(entry["domain_id"]),
        message_id=str(entry["event_id"]),
        timestamp=datetime.fromisoformat(str(entry["occurred_at"])),
    )


@dataclass
class Incoming:
    """A delivered command, decoded from AMQP into plain values."""

    routing_key: str
    message_id: str
    body: bytes
    domain_id: str | None
    actor: str | None
    schema_version: int
    reply_to: str | None
    correlation_id: str | None
    delivery_count: int
    headers: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None  # the publisher's broker account, which RabbitMQ validated
    # The body already parsed, when it came as an item of a bulk message (shared/bulk.py):
    # validated from these values, it is not encoded again only to be parsed again.
    decoded: dict[str, Any] | None = None

    def json(self) -> Any:
        """The body as plain values."""
        return self.decoded if self.decoded is not None else jsoncodec.loads(self.body)

    def read(self, model: type[M]) -> M:
        """The body as `model`, validated."""
        if self.decoded is not None:
            return model.model_validate(self.decoded)
        return model.model_validate_json(self.body)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def decode(message: AbstractIncomingMessage) -> Incoming:
    headers = dict(message.headers or {})
    schema = headers.get(H_SCHEMA, SCHEMA_VERSION)
    return Incoming(
        routing_key=message.routing_key or message.type or "",
        # A message without an id (an integrator's hand-made one) is identified by its body.
        message_id=message.message_id or _uuid5(_OID, message.body.hex()),
        body=message.body,
        domain_id=_text(headers.get(H_DOMAIN)),
        actor=_text(headers.get(H_ACTOR)),
        schema_version=int(schema)
        if isinstance(schema, int | str) and str(schema).isdigit()
        else -1,
        reply_to=message.reply_to,
        correlation_id=message.correlation_id,
        delivery_count=_count(headers.get(H_DELIVERY_COUNT)),
        headers=headers,
        user_id=message.user_id,
    )

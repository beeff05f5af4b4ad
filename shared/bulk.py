"""Many commands of one kind in one message: the same work in fewer messages.

A message costs the sender, the broker and the service far more than the small change it
usually carries (encoding, routing, the ack, the reply and its delivery: two thirds of a
progress report's CPU). So when one process has several requests of one kind for one
tenant waiting at the same moment, `BulkSender` sends them as one `<key>_many` message,
and the service's `bulk(handler)` applies each item exactly as if it had come alone:

- under its own id (the one its sender gave it, or one derived from the message's), so a
  redelivered bulk finds every item it already applied and answers it as before (the
  duplicate guard, per item), and a service that sends a step again after a crash is
  answered as the first time, whichever message carried it;
- items of one aggregate (the `key` each item names) one after another, in order; the
  others concurrently, so their writes share the store's group commit;
- a refusal is that item's reply; a malformed item is answered 400 and the others go on;
  an outage holds the whole message, as it would hold each of them.

Nothing waits to be batched: a request is sent at once when nothing of its kind is on the
way, and only those that arrive meanwhile go together in the next message. A lone
request is sent as the plain message, so at low load nothing changes on the wire.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from shared import jsoncodec
from shared.aggregates import refusal
from shared.bus import Requests, Unavailable
from shared.coalescer import Coalescer
from shared.consumer import Handler, PermanentError, without_values
from shared.envelope import Incoming, Reply, derived_id
from shared.errors import ApiError, SmsCode

SUFFIX = "_many"
MAX_ITEMS = 200


class BulkItem(BaseModel):
    key: str = Field(description="the aggregate it changes: items of one key apply in order")
    body: dict[str, Any] = Field(description="the body the plain command would carry")
    message_id: str | None = Field(
        default=None, description="its id, as the plain command's; none: derived from the bulk's"
    )


class BulkRequest(BaseModel):
    """Body of every `<key>_many` command."""

    items: list[BulkItem] = Field(min_length=1, max_length=MAX_ITEMS)


class BulkReply(BaseModel):
    """Its reply: each item's, in order."""

    replies: list[Reply]


def bulk(handler: Handler) -> Handler:
    """The `<key>_many` handler of the plain handler `handler`."""

    async def many(incoming: Incoming) -> Reply:
        # Parsed once, as plain values: each item's body is validated by its handler alone.
        items = BulkRequest.model_validate(jsoncodec.loads(incoming.body)).items
        replies: list[Reply] = [Reply(status=500)] * len(items)
        by_key: dict[str, list[int]] = {}
        for index, item in enumerate(items):
            by_key.setdefault(item.key, []).append(index)

        async def in_order(indexes: list[int]) -> None:
            for index in indexes:
                item = items[index]
                one = replace(
                    incoming,
                    routing_key=incoming.routing_key.removesuffix(SUFFIX),
                    message_id=item.message_id or derived_id(incoming.message_id, f"item-{index}"),
                    body=b"",
                    decoded=item.body,
                    reply_to=None,
                    correlation_id=None,
                )
                replies[index] = await _one(handler, one)

        await asyncio.gather(*(in_order(indexes) for indexes in by_key.values()))
        return Reply(status=200, body=BulkReply(replies=replies).model_dump(mode="json"))

    return many


async def _one(handler: Handler, incoming: Incoming) -> Reply:
    try:
        reply = await handler(incoming)
    except ApiError as exc:
        return refusal(exc.code, exc.message, exc.params)
    except ValidationError as exc:
        return refusal(SmsCode.INVALID_PARAMETER, f"malformed body: {without_values(exc)}")
    except (ValueError, PermanentError) as exc:
        return refusal(SmsCode.INVALID_PARAMETER, f"malformed body: {exc}")
    return reply if reply is not None else Reply(status=200, body={})


@dataclass(frozen=True)
class _Item:
    key: str
    body: dict[str, Any]
    message_id: str | None
    sent_at: float  # monotonic: the caller waits no longer than the timeout from here


class BulkSender:
    """Sends `routing_key` commands for a tenant, many at a time when many wait.

    Requests are spread over `lanes` by their key, so several messages can be on the way
    for one tenant while the requests of one aggregate stay in one lane, in order. A
    request waits for a reply no longer than `timeout` from when it was sent, even when it
    waited first behind a message on its way (it goes with what time it has left)."""

    def __init__(
        self, requester: Requests, routing_key: str, timeout: float, lanes: int = 1
    ) -> None:
        self.requester = requester
        self.routing_key = routing_key
        self.timeout = timeout
        self.lanes = lanes
        self._waiting = Coalescer[_Item, Reply](self._send, _held)

    async def send(
        self,
        domain_id: str,
        key: str,
        body: BaseModel | dict[str, Any],
        message_id: str | None = None,
    ) -> Reply:
        """Sends `body` (a model, or a model already dumped) for the aggregate `key`."""
        lane = zlib.crc32(key.encode()) % self.lanes
        dumped = body.model_dump(mode="json") if isinstance(body, BaseModel) else body
        item = _Item(key, dumped, message_id, time.monotonic())
        return await self._waiting.submit(f"{lane}\x1f{domain_id}", item)

    async def _send(self, lane: str, items: list[_Item]) -> Sequence[Reply]:
        domain_id = lane.split("\x1f", 1)[1]
        chunks = [items[i : i + MAX_ITEMS] for i in range(0, len(items), MAX_ITEMS)]
        answered = await asyncio.gather(*(self._send_chunk(domain_id, c) for c in chunks))
        return [reply for replies in answered for reply in replies]

    async def _send_chunk(self, domain_id: str, items: list[_Item]) -> list[Reply]:
        left = self.timeout - (time.monotonic() - min(item.sent_at for item in items))
        if left <= 0:
            raise Unavailable(f"no time left to send {self.routing_key}")
        key, body, message_id = carrying(
            self.routing_key,
            [BulkItem(key=i.key, body=i.body, message_id=i.message_id) for i in items],
        )
        reply = await self.requester.request(
            key, body, domain_id=domain_id, message_id=message_id, timeout=left
        )
        if len(items) == 1:
            return [reply]
        if reply.status != 200:
            return [reply] * len(items)  # the message itself refused: each item is
        return BulkReply.model_validate(reply.body).replies


def carrying(routing_key: str, items: list[BulkItem]) -> tuple[str, bytes, str | None]:
    """Routing key, body and message id of the message that carries `items`: a lone item
    goes as the plain command under its own id, more as one `<key>_many`."""
    if len(items) == 1:
        return routing_key, jsoncodec.dump_bytes(items[0].body), items[0].message_id
    return routing_key + SUFFIX, BulkRequest(items=items).model_dump_json().encode(), None


def _held(exc: BaseException) -> BaseException:
    """What the other requests of a message that failed get: 503, as the first one."""
    if isinstance(exc, Unavailable):
        return type(exc)(str(exc))
    return Unavailable(f"sending failed: {exc!r}")

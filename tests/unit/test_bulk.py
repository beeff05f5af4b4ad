"""Many commands in one message (shared/bulk.py): each item applied as if it came alone."""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import Any

import pytest

from shared.bulk import BulkSender, bulk
from shared.bus import Unavailable
from shared.envelope import Incoming, Reply, derived_id
from shared.errors import ApiError, SmsCode
from tests.support.fakes import ScriptedRequester


def incoming(body: dict[str, Any], message_id: str = "bulk-1") -> Incoming:
    return Incoming(
        routing_key="sms.x.do_many",
        message_id=message_id,
        body=json.dumps(body).encode(),
        domain_id="d",
        actor=None,
        schema_version=1,
        reply_to="caller",
        correlation_id="c",
        delivery_count=0,
    )


class Recorder:
    """A plain handler: keeps what it was called with; `n` < 0 is refused, `bad` malformed."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int]] = []  # routing key, message id, n

    async def __call__(self, message: Incoming) -> Reply:
        body = message.json()
        if "bad" in body:
            raise ValueError("not a number")
        await asyncio.sleep(0.001 * (5 - body["n"] % 5))  # later items would finish first
        self.calls.append((message.routing_key, message.message_id, body["n"]))
        if body["n"] < 0:
            raise ApiError(SmsCode.TASK_NOT_FOUND, "no such task")
        assert message.reply_to is None  # each item's reply goes in the bulk's, not alone
        return Reply(status=200, body={"n": body["n"]})


async def test_each_item_applies_alone_in_order_per_key_with_its_own_id() -> None:
    handler = Recorder()
    items = [
        {"key": "a", "body": {"n": 1}},
        {"key": "b", "body": {"n": 2}},
        {"key": "a", "body": {"n": 3}, "message_id": "given"},
        {"key": "b", "body": {"bad": True}},
        {"key": "c", "body": {"n": -1}},
    ]
    reply = await bulk(handler)(incoming({"items": items}))
    replies = reply.body["replies"]
    assert [r["status"] for r in replies] == [200, 200, 200, 400, 404]
    assert replies[0]["body"] == {"n": 1} and "not a number" in replies[3]["body"]["error_msg"]
    of_a = [n for _, _, n in handler.calls if n in (1, 3)]
    assert of_a == [1, 3]  # one key's items in order, though the later one is quicker
    ids = {n: message_id for _, message_id, n in handler.calls}
    assert ids[1] == derived_id("bulk-1", "item-0") and ids[3] == "given"
    assert {key for key, _, _ in handler.calls} == {"sms.x.do"}


async def test_an_outage_holds_the_whole_message() -> None:
    async def down(message: Incoming) -> Reply:
        raise Unavailable("the registry did not answer")

    with pytest.raises(Unavailable):
        await bulk(down)(incoming({"items": [{"key": "a", "body": {}}]}))


async def test_a_lone_request_goes_plain_and_those_that_wait_go_together() -> None:
    gate = asyncio.Event()

    async def answer_many(body: dict[str, Any]) -> Reply:
        return Reply(
            status=200, body={"replies": [{"status": 200, "body": i} for i in body["items"]]}
        )

    requester = ScriptedRequester({"sms.x.do": Reply(status=200, body={"alone": True})})
    original = requester.request

    async def slow(*args: Any, **kwargs: Any) -> Reply:
        await gate.wait()
        if args[0] == "sms.x.do_many":
            requester.sent.append((args[0], json.loads(args[1]), kwargs.get("message_id")))
            return await answer_many(json.loads(args[1]))
        return await original(*args, **kwargs)

    requester.request = slow  # type: ignore[method-assign]
    sender = BulkSender(requester, "sms.x.do", timeout=10)
    first = asyncio.create_task(sender.send("d", "k1", {"n": 1}, message_id="m1"))
    await asyncio.sleep(0)
    rest = [asyncio.create_task(sender.send("d", f"k{i}", {"n": i})) for i in (2, 3)]
    await asyncio.sleep(0)
    gate.set()
    assert (await first).body == {"alone": True}
    replies = await asyncio.gather(*rest)
    assert [r.body["body"] for r in replies] == [{"n": 2}, {"n": 3}]
    assert requester.keys() == ["sms.x.do", "sms.x.do_many"]
    assert requester.sent[0][2] == "m1"  # a lone request keeps its id
    assert [i["key"] for i in requester.sent[1][1]["items"]] == ["k2", "k3"]


async def test_a_request_that_waited_behind_another_goes_with_the_time_it_has_left() -> None:
    timeouts: list[float] = []

    class Slow:
        async def request(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> Reply:
            timeouts.append(timeout or 0.0)
            await asyncio.sleep(0.2)  # the first is still on its way when the second comes
            raise Unavailable("no reply in time")

    sender = BulkSender(Slow(), "sms.x.do", timeout=0.3)  # type: ignore[arg-type]
    first = asyncio.create_task(sender.send("d", "k1", {"n": 1}))
    await asyncio.sleep(0)
    second = asyncio.create_task(sender.send("d", "k2", {"n": 2}))
    for waiting in (first, second):
        with pytest.raises(Unavailable):
            await waiting
    assert len(timeouts) == 2 and timeouts[1] < 0.15  # not a second full timeout


async def settled() -> None:
    """Lets every task that can run do so, up to its next real wait."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_lanes_carry_other_keys_beside_a_message_on_its_way_and_one_key_in_order() -> None:
    """Two lanes (the gateway's registers): a second message goes while the first is on
    its way, but never one with a key whose earlier request is still unanswered."""
    on_the_way: list[list[str]] = []
    gates: list[asyncio.Event] = []

    class Held:
        async def request(self, routing_key: str, body: bytes, **_: Any) -> Reply:
            sent = json.loads(body)
            keys = [i["key"] for i in sent["items"]] if "items" in sent else [sent["key"]]
            on_the_way.append(keys)
            gates.append(asyncio.Event())
            await gates[-1].wait()
            if "items" not in sent:
                return Reply(status=200, body=sent)
            replies = [{"status": 200, "body": i["body"]} for i in sent["items"]]
            return Reply(status=200, body={"replies": replies})

    sender = BulkSender(Held(), "sms.x.do", timeout=10, lanes=2)  # type: ignore[arg-type]
    lane_of = {key: zlib.crc32(key.encode()) % 2 for key in ("a", "b", "c", "d")}
    first, other = "a", next(k for k in "bcd" if lane_of[k] != lane_of["a"])
    same = next(k for k in "bcd" if lane_of[k] == lane_of["a"])
    sends = [asyncio.create_task(sender.send("d", first, {"key": first, "n": 1}))]
    await asyncio.sleep(0)
    sends.append(asyncio.create_task(sender.send("d", other, {"key": other, "n": 2})))
    sends.append(asyncio.create_task(sender.send("d", first, {"key": first, "n": 3})))
    sends.append(asyncio.create_task(sender.send("d", same, {"key": same, "n": 4})))
    await settled()
    assert on_the_way == [[first], [other]]  # two messages on their way, one per lane
    gates[0].set()
    await settled()
    assert on_the_way[2] == [first, same]  # the first's lane again, the key's order kept
    for gate in gates:
        gate.set()
    replies = await asyncio.gather(*sends)
    assert [r.body["n"] for r in replies] == [1, 2, 3, 4]

"""Command-result alone: what recording a result costs it, by how many a message carries.

The results' chain ends in command-result, off the path of the 200 but on the same two
cores: at half the sustainable rate it was the busiest process (0.5 cores at 700 results/s,
where the registry used 0.3), and its cost follows the messages more than the results
(the registry tells it a bulk's records in one message, and bulks are small at half rate).
Measured inside the whole system, that cost moves by a fifth from one run to the next with
the rest of the load; here the other services idle and the bench feeds command-result's
queue directly, the way the registry does (`sms.command.record_result_many`), at one rate of
results in messages of several sizes, and waits for every `command.result_recorded`, so a
record refused (or dead-lettered) cannot pass for a cheap one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from bench.cpu import CpuShare
from bench.fixtures import DOMAIN
from services.registry.handlers import RECORD
from shared.bulk import BulkItem, carrying
from shared.bus import Bus, Requester
from shared.contracts.commands import RecordResult, ReportResult
from shared.envelope import Reply
from tests.support.integrator import event_tap
from tests.support.processes import System


@dataclass(frozen=True)
class RecordCost:
    per_message: int  # records in each message
    results: int
    cpu_seconds: float  # command-result's, from the first message to the last event

    @property
    def us_per_result(self) -> float:
        return self.cpu_seconds / self.results * 1e6


def _record(server_id: str) -> BulkItem:
    """A result the registry answered 200, as its `_report` tells it."""
    report = ReportResult(
        server_id=server_id,
        command_name="UPLOAD_LOG",
        result="success",
        result_detail={"msg": "ok"},
    )
    record = RecordResult(
        report=report,
        outcome=Reply(status=200, body={"state": "syncing"}),
        received_at=datetime.now(UTC),
    )
    body = record.model_dump(mode="json")
    return BulkItem(key=server_id, body=body, message_id=str(uuid.uuid4()))


async def _feed(requester: Requester, rate: float, per_message: int, seconds: float) -> int:
    """Tells `rate` records a second, `per_message` to a message, open loop; how many."""
    servers = [str(uuid.uuid4()) for _ in range(1000)]
    messages = int(rate / per_message * seconds)
    first = time.perf_counter()
    told = []
    for i in range(messages):
        delay = first + i * per_message / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        items = [_record(servers[(i * per_message + j) % len(servers)]) for j in range(per_message)]
        key, body, message_id = carrying(RECORD, items)
        told.append(
            asyncio.create_task(requester.tell(key, body, domain_id=DOMAIN, message_id=message_id))
        )
    await asyncio.gather(*told)
    return messages * per_message


async def record_costs(
    system: System, amqp_url: str, rate: float, sizes: list[int], seconds: float
) -> list[RecordCost]:
    """Command-result's CPU at `rate` records a second, for each message size in `sizes`."""
    process = system["command-result"].popen
    assert process is not None  # started: its session's id is its pid
    costs = []
    bus = Bus(amqp_url, "bench-records")
    try:
        await bus.connect()
        requester = Requester(bus, timeout=10, max_in_flight=4096)
        await requester.start()
        async with event_tap(amqp_url, "command.result_recorded", keep=False) as tap:
            await _feed(requester, rate, 1, 2)  # warm up: its connections, caches, tables
            await tap.settle(quiet=1.0)
            for size in sizes:
                before = tap.arrivals
                with CpuShare({process.pid: "command-result"}) as cpu:
                    results = await _feed(requester, rate, size, seconds)
                    await tap.wait_for(before + results, timeout=60)
                costs.append(RecordCost(size, results, cpu.seconds.get("command-result", 0.0)))
    finally:
        await bus.close()
    return costs

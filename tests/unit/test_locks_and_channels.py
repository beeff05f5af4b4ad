"""Target locks and agent command queues, pure."""

from __future__ import annotations

from datetime import UTC, datetime

from services.command_result import channels, results
from services.task_lock import locks
from shared.contracts.commands import EnqueueCommand, RecordResult, ReportResult
from shared.envelope import Reply
from shared.store import Document

NOW = datetime(2026, 12, 2, tzinfo=UTC)


def saved(doc: Document | None) -> Document:
    assert doc is not None
    return doc.evolve(version=doc.version + 1)


def test_each_new_holder_gets_a_greater_fencing_token_and_a_holder_is_never_two() -> None:
    first = locks.acquire(None, "d", "vm", "t1", NOW)
    held = saved(first.doc)
    assert first.reply.body["fencing_token"] == 1 and locks.holder(held) == "t1"
    assert locks.acquire(held, "d", "vm", "t2", NOW).reply.body["error_code"] == "SMS.3002"
    assert locks.acquire(held, "d", "vm", "t1", NOW).doc is None  # its own: nothing changes
    assert locks.release(held, "vm", "t2", "explicit_unlock", NOW).doc is None  # not its
    free = saved(locks.release(held, "vm", "t1", "explicit_unlock", NOW).doc)
    second = locks.acquire(free, "d", "vm", "t2", NOW)
    assert second.reply.body["fencing_token"] == 2 and locks.holder(saved(second.doc)) == "t2"
    assert locks.fenced("t1", "vm").reply.body["error_code"] == "SMS.3005"


def enqueue(current: Document | None, name: str) -> Document:
    command = EnqueueCommand(server_id="s1", command_name=name, command_param={}, task_id="t")
    return saved(channels.enqueue(current, command, "d", NOW).doc)


def test_commands_are_handed_out_in_order_until_their_result_arrives() -> None:
    assert channels.next_command(None).command_name == ""
    channel = enqueue(enqueue(None, "START"), "SYNC")
    assert channels.next_command(channel).command_name == "START"
    assert channels.next_command(channel).command_name == "START"  # asked again: the same
    assert channels.settle(channel, "SYNC").doc is None  # not the head: nothing ends
    channel = saved(channels.settle(channel, "START").doc)
    assert channels.next_command(channel).command_name == "SYNC"


def test_a_result_is_recorded_once_with_whether_the_lifecycle_took_it() -> None:
    report = ReportResult(
        server_id="s1", command_name="START", result="success", result_detail={"msg": "x"}
    )
    refused = Reply(status=409, body={"error_code": "SMS.2005", "error_msg": "in waiting"})
    told = RecordResult(report=report, outcome=refused, received_at=NOW, trace_id="t")
    decision = results.record(None, "r1", told, "d")
    assert decision.doc is not None
    entry = decision.doc.data
    assert (entry["accepted"], entry["refusal"]) == (False, "in waiting")
    assert (entry["received_at"], entry["trace_id"]) == (NOW.isoformat(), "t")
    [event] = decision.events
    assert event.type == "command.result_recorded" and event.data["result"]["accepted"] is False
    assert results.record(saved(decision.doc), "r1", told, "d").doc is None  # told again
    taken = Reply(status=200, body={"state": "replicate", "migration_cycle": "replicating"})
    told = RecordResult(report=report, outcome=taken, received_at=NOW)
    entry = results.record(None, "r2", told, "d").doc
    assert entry is not None and entry.data["accepted"] and entry.data["state"] == "replicate"

"""The stored state's declared shapes (TypedDicts) match the JSON the rules write: each
document the domain functions make validates against its shape, and reads back as it was
written."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from services.registry import sources
from services.registry import stored as source_stored
from services.script_executor import agents, executions, stored
from services.script_executor.executions import Context
from services.task_lock import locks, tasks
from services.task_lock import stored as task_stored
from shared.contracts.lifecycle import CommandName
from shared.contracts.scripts import ExecuteScript, Heartbeat, RunFinished
from shared.contracts.sources import SourceServerBody
from shared.contracts.tasks import LockView, TaskBody, TaskProgressCommand
from shared.store import Document

NOW = datetime(2026, 12, 2, tzinfo=UTC)
EXECUTE = {
    "execute_param": {"timeout": 30, "success_rate": "50", "execute_user": "root"},
    "execute_batches": [
        {
            "batch_index": 1,
            "rotation_strategy": "CONTINUE",
            "target_instances": [
                {"resource_id": f"r{i}", "agent_sn": f"a{i}", "project_id": "p", "region_id": "x"}
                for i in range(3)
            ],
        }
    ],
}
SCRIPT = {"script_uuid": "s", "name": "n", "type": "SHELL", "content": "true"}


def valid(shape: Any, data: dict[str, Any]) -> None:
    """`data` is of `shape`, and JSON keeps it as it is."""
    TypeAdapter(shape).validate_python(data, strict=False)
    assert json.loads(json.dumps(data)) == data


def test_an_execution_as_it_runs_is_of_its_shape() -> None:
    data = executions.new_execution("SCT1", SCRIPT, ExecuteScript.model_validate(EXECUTE), 1.0)
    valid(stored.Execution, stored.stored(data))
    ctx = Context(now=2.0, online=frozenset({"a0", "a1"}), grace=3)
    started = executions.start(data, ctx).data
    valid(stored.Execution, stored.stored(started))
    run_id = started["batches"][0]["hosts"][0]["run_id"]
    report = RunFinished(
        run_id=run_id,
        agent_sn="a0",
        status="SUCCESS",
        exit_code=0,
        duration_ms=5,
        stdout="",
        stderr="",
    )
    finished = executions.hosts_finished(started, [report], ctx.at(3.0)).data
    valid(stored.Execution, stored.stored(finished))
    doc = Document(id="SCT1", domain_id="d", data=json.loads(json.dumps(stored.stored(finished))))
    assert stored.execution_of(doc) == finished  # read back as written


def test_a_task_and_its_lock_as_they_move_are_of_their_shapes() -> None:
    body = TaskBody.model_validate(
        {
            "name": "t",
            "type": "MIGRATE_FILE",
            "os_type": "LINUX",
            "migration_ip": "1.1.1.1",
            "source_server": {"id": "s1"},
            "target_server": {"vm_id": "vm", "name": "target"},
            "region_name": "r",
        }
    )
    created = tasks.create(None, "t1", body, "d", NOW).doc
    assert created is not None
    valid(task_stored.Task, created.data)
    lock_doc = locks.acquire(None, "d", "vm", "t1", NOW).doc
    assert lock_doc is not None
    valid(task_stored.Lock, lock_doc.data)
    held = LockView(vm_id="vm", held=True, fencing_token=1, locked_at=NOW.isoformat())
    step = tasks.plan("start", "READY")
    assert isinstance(step, tasks.ActionStep)
    running = tasks.apply_action(created, "start", step, held, NOW).doc
    assert running is not None
    report = TaskProgressCommand(task_id="t1", subtask_name="MIGRATE_LINUX_FILE", progress=100)
    progressed = tasks.report_progress(running, report, "d", NOW).doc
    assert progressed is not None
    valid(task_stored.Task, progressed.data)
    released = locks.release(lock_doc, "vm", "t1", "task_finished", NOW).doc
    assert released is not None
    valid(task_stored.Lock, released.data)
    assert task_stored.task_of(progressed)["sub_tasks"][0]["end_date"] is not None
    command: CommandName = "START"
    assert step.command == command


def test_a_source_server_and_an_agent_are_of_their_shapes() -> None:
    body = SourceServerBody.model_validate(
        {"name": "h", "hostname": "h", "ip": "10.0.0.1", "os_type": "LINUX", "os_version": "x"}
    )
    created = sources.register(None, body, "d", new_id="s1", now=NOW).doc
    assert created is not None
    valid(source_stored.Source, created.data)
    claim = agents.Claim("web-01", "agent-web-01", "d")
    beat = Heartbeat(agent_sn="web-01", vm_uuid="vm", hostname="h", running=0, at="t")
    bound = agents.heartbeat(None, claim, beat, 1.0, first_use="d", vm_taken=False).doc
    assert bound is not None
    valid(stored.Agent, bound.data)
    assert stored.agent_of(bound)["account"] == "agent-web-01"

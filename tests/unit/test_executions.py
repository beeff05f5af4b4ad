"""The execution rules (`executions.py`), without a broker: batches, reports, pausing."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.script_executor import executions
from services.script_executor.executions import Context
from shared.contracts.scripts import ExecuteScript, RunFinished

SCRIPT = {"script_uuid": "s1", "name": "s", "type": "SHELL", "content": "true"}


def execution(
    batch_sizes: list[int], success_rate: str = "100.0", rotation: str = "PAUSE"
) -> dict[str, Any]:
    request = ExecuteScript.model_validate(
        {
            "execute_param": {"timeout": 30, "success_rate": success_rate, "execute_user": "root"},
            "execute_batches": [
                {
                    "batch_index": b,
                    "rotation_strategy": rotation,
                    "target_instances": [
                        {
                            "resource_id": f"r{b}-{i}",
                            "agent_sn": f"a{b}-{i}",
                            "project_id": "p",
                            "region_id": "r",
                        }
                        for i in range(size)
                    ],
                }
                for b, size in enumerate(batch_sizes, start=1)
            ],
        }
    )
    return executions.new_execution("SCT1", SCRIPT, request, now=0.0)


def everyone_online(data: dict[str, Any], now: float = 1.0) -> Context:
    agents = {h["agent_sn"] for b in data["batches"] for h in b["hosts"]}
    return Context(now=now, online=frozenset(agents), grace=5.0)


def report(run_id: str, ok: bool = True) -> RunFinished:
    return RunFinished(
        run_id=run_id,
        agent_sn="x",
        status="SUCCESS" if ok else "FAILED",
        exit_code=0 if ok else 1,
        duration_ms=3,
        stdout="",
        stderr="",
    )


def started(batch_sizes: list[int], success_rate: str = "100.0") -> executions.Outcome:
    data = execution(batch_sizes, success_rate)
    return executions.start(data, everyone_online(data))


def test_start_sends_only_the_first_batch() -> None:
    outcome = started([2, 3])
    assert [sn for sn, _ in outcome.runs] == ["a1-0", "a1-1"]
    assert [b["status"] for b in outcome.data["batches"]] == ["PROCESSING", "READY"]


def test_the_last_report_of_a_batch_sends_the_next() -> None:
    first = started([2, 1])
    ctx = everyone_online(first.data, now=2.0)
    run_ids = [run.run_id for _, run in first.runs]
    one = executions.host_finished(first.data, report(run_ids[0]), ctx)
    assert one.runs == []
    both = executions.host_finished(one.data, report(run_ids[1]), ctx)
    assert [sn for sn, _ in both.runs] == ["a2-0"]


def test_a_batch_below_its_success_rate_pauses_a_pausing_execution() -> None:
    first = started([1, 1])
    ((_, run),) = first.runs
    after = executions.host_finished(
        first.data, report(run.run_id, ok=False), everyone_online(first.data)
    )
    assert after.data["status"] == "PAUSED" and after.runs == []


def test_a_duplicate_or_unknown_report_changes_nothing() -> None:
    first = started([2])
    ctx = everyone_online(first.data)
    run_id = first.runs[0][1].run_id
    once = executions.host_finished(first.data, report(run_id), ctx)
    again = executions.host_finished(once.data, report(run_id), ctx)
    assert again.data == once.data and again.events == [] and again.runs == []
    stray = executions.host_finished(once.data, report("SCT1.99"), ctx)
    assert stray.data == once.data


@settings(max_examples=50, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 4), min_size=1, max_size=4),
    outcomes=st.lists(st.booleans(), min_size=16, max_size=16),
    cut=st.integers(0, 16),
)
def test_reports_applied_together_equal_them_applied_one_by_one(
    sizes: list[int], outcomes: list[bool], cut: int
) -> None:
    first = started(sizes, success_rate="50.0")
    ctx = everyone_online(first.data, now=2.0)
    reports = [report(run.run_id, ok) for (_, run), ok in zip(first.runs, outcomes, strict=False)]
    reports = reports[:cut] + reports[:cut]  # duplicates too

    folded = executions.hosts_finished(first.data, reports, ctx)
    data = first.data
    events: list[tuple[str, dict[str, Any]]] = []
    runs: list[tuple[str, Any]] = []
    for each in reports:
        step = executions.host_finished(data, each, ctx)
        data, events, runs = step.data, events + step.events, runs + step.runs
    assert folded.data == data
    assert folded.events == events
    assert folded.runs == runs

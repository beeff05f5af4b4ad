"""Progress reports on a task, pure: taken while it migrates, recorded as refused otherwise."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.task_lock import tasks
from shared.contracts.tasks import TaskProgressCommand
from shared.store import Document

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def task(state: str = "RUNNING", **data: object) -> Document:
    return Document(id="t1", domain_id="d1", data={"state": state, **data}, version=3)


def report(
    subtask: str = "MIGRATE_LINUX_FILE", progress: int = 10, **figures: object
) -> TaskProgressCommand:
    return TaskProgressCommand(task_id="t1", subtask_name=subtask, progress=progress, **figures)


def test_a_report_sets_the_sub_task_and_the_figures_the_page_shows() -> None:
    decision = tasks.report_progress(
        task(),
        report(progress=40, migrate_speed=12.5, remain_time=90, total_cpu_usage=35.0),
        "d1",
        NOW,
    )
    assert decision.reply.status == 200 and decision.doc is not None
    data = decision.doc.data
    assert (data["migrate_speed"], data["remain_seconds"], data["total_cpu_usage"]) == (
        12.5,
        90,
        35.0,
    )
    assert data["estimate_complete_time"] == int(NOW.timestamp() * 1000) + 90_000
    [sub] = data["sub_tasks"]
    assert (sub["id"], sub["name"], sub["progress"], sub["end_date"]) == (
        1,
        "MIGRATE_LINUX_FILE",
        40,
        None,
    )
    [event] = decision.events
    assert event.type == "task.progress" and event.data["accepted"] is True


def test_sub_tasks_keep_their_ids_and_their_first_end() -> None:
    first = tasks.report_progress(task(), report(progress=100), "d1", NOW).doc
    assert first is not None
    later = NOW + timedelta(seconds=5)
    second = tasks.report_progress(first, report("SYNC_LINUX_FILE", 5), "d1", later).doc
    assert second is not None
    again = tasks.report_progress(second, report(progress=100), "d1", later).doc
    assert again is not None
    subs = {s["name"]: s for s in again.data["sub_tasks"]}
    assert subs["MIGRATE_LINUX_FILE"]["id"] == 1 and subs["SYNC_LINUX_FILE"]["id"] == 2
    assert subs["MIGRATE_LINUX_FILE"]["end_date"] == int(NOW.timestamp() * 1000)


@pytest.mark.parametrize("state", ["READY", "ABORT", "MIGRATE_SUCCESS", "MIGRATE_FAIL", "ABORTING"])
def test_a_task_that_is_not_migrating_records_the_report_and_keeps_its_figures(state: str) -> None:
    current = task(state, sub_tasks=[{"id": 1, "name": "X", "progress": 100}], migrate_speed=3.0)
    decision = tasks.report_progress(current, report(progress=50, migrate_speed=9.0), "d1", NOW)
    assert decision.reply.status == 200 and decision.doc is not None
    data = decision.doc.data
    assert data["state"] == state and data["migrate_speed"] == 3.0
    assert data["sub_tasks"] == current.data["sub_tasks"]
    assert state in data["refused_progress"]["reason"]
    [event] = decision.events
    assert event.data["accepted"] is False and state in event.data["refusal"]


def test_a_task_of_another_tenant_is_not_found() -> None:
    assert tasks.report_progress(task(), report(), "d2", NOW).reply.status == 404

"""COC reads of an execution: the page's status names, costs in seconds, batch paging."""

from __future__ import annotations

from typing import Any

from services.script_executor.views import batch_detail, current_batch, order_status, order_summary


def host(instance_id: int, status: str, **more: Any) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "status": status,
        "resource_id": "r",
        "agent_sn": f"a{instance_id}",
        "region_id": "x",
        "project_id": "p",
        **more,
    }


def execution(status: str, *batches: tuple[str, list[dict[str, Any]]]) -> dict[str, Any]:
    return {
        "execute_uuid": "SCT1",
        "script_uuid": "s",
        "script_name": "n",
        "timeout": 30,
        "success_rate": "100",
        "execute_user": "root",
        "script_params": [],
        "status": status,
        "created_at": 100.0,
        "finished_at": 112.6,
        "batches": [
            {"batch_index": i, "status": b, "rotation_strategy": "PAUSE", "hosts": hosts}
            for i, (b, hosts) in enumerate(batches, start=1)
        ],
    }


def test_a_finished_execution_with_a_failed_host_is_abnormal() -> None:
    clean = execution("FINISHED", ("FINISHED", [host(1, "SUCCESS"), host(2, "SKIPPED")]))
    failed = execution("FINISHED", ("FINISHED", [host(1, "SUCCESS"), host(2, "TIMEOUT")]))
    assert order_status(clean) == "FINISHED" and order_status(failed) == "ABNORMAL"
    summary = order_summary(failed)
    assert (summary["status"], summary["rehost_status"], summary["execute_costs"]) == (
        "ABNORMAL",
        "FINISHED",
        13,
    )


def test_a_paused_execution_names_the_batch_it_paused_after() -> None:
    paused = execution("PAUSED", ("FINISHED", [host(1, "FAILED")]), ("READY", [host(2, "READY")]))
    assert current_batch(paused) == 1
    assert order_summary(paused)["properties"]["current_execute_batch_index"] == 1


def test_hosts_read_with_the_page_names_and_page_by_marker_and_status() -> None:
    hosts = [
        host(1, "SUCCESS", duration_ms=1499),
        host(2, "FAILED"),
        host(3, "TIMEOUT"),
        host(4, "CANCELED"),
        host(5, "SKIPPED"),
        host(6, "PROCESSING"),
        host(7, "READY"),
    ]
    batch = {"batch_index": 1, "status": "PROCESSING", "rotation_strategy": "PAUSE", "hosts": hosts}
    whole = batch_detail(batch, {})["execute_instances"]
    assert [h["status"] for h in whole] == [
        "FINISHED",
        "ABNORMAL",
        "ABNORMAL",
        "CANCELED",
        "CANCELED",
        "PROCESSING",
        "READY",
    ]
    assert [h["rehost_status"] for h in whole][:3] == ["SUCCESS", "FAILED", "TIMEOUT"]
    assert whole[0]["execute_costs"] == 1
    abnormal = batch_detail(batch, {}, status="ABNORMAL")["execute_instances"]
    assert [h["id"] for h in abnormal] == [2, 3]
    page = batch_detail(batch, {}, marker=2, limit=3)["execute_instances"]
    assert [h["id"] for h in page] == [3, 4, 5]
    assert batch_detail(batch, {}, marker=2, limit=3)["total_instances"] == 7

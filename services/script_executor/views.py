"""What the COC script-job reads answer: an execution, its batches, one batch's hosts.

The shapes are those of the official COC SDK's models (`JobScriptOrderInfoModel`,
`JobScriptBatchListModel`, `JobScriptBatchDetailModel`, `JobScriptOrderStatisticsModel`),
with times in epoch milliseconds, costs in seconds and the page's status names. Rehost
keeps its finer status in `rehost_status` (a host's SUCCESS, FAILED, TIMEOUT, CANCELED or
SKIPPED; an execution's FINISHED even when some hosts failed) and adds `statistics` (the
count of each finer status), and each host's exit code and output.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.contracts.scripts import OrderQuery

from .executions import host_statistics, statistics
from .scripts import masked
from .stored import Batch, Execution


def _ms(stamp: float | None) -> int | None:
    return None if stamp is None else int(stamp * 1000)


# A host's status as the COC pages name it: READY, PROCESSING, ABNORMAL, CANCELED, FINISHED.
HOST_STATUS = {
    "READY": "READY",
    "PROCESSING": "PROCESSING",
    "SUCCESS": "FINISHED",
    "FAILED": "ABNORMAL",
    "TIMEOUT": "ABNORMAL",
    "CANCELED": "CANCELED",
    "SKIPPED": "CANCELED",
}
COC_HOST_STATUSES = ("READY", "PROCESSING", "ABNORMAL", "CANCELED", "FINISHED")


def _seconds(started: float | None, finished: float | None) -> int | None:
    return None if started is None or finished is None else round(finished - started)


def order_status(data: Execution) -> str:
    """PROCESSING, PAUSED, CANCELED, FINISHED, or ABNORMAL: finished with a host that
    failed or timed out."""
    status = str(data["status"])
    failed = any(h["status"] in ("FAILED", "TIMEOUT") for b in data["batches"] for h in b["hosts"])
    return "ABNORMAL" if status == "FINISHED" and failed else status


def current_batch(data: Execution) -> int | None:
    """The batch running, or, while paused, the last one that ran (the one it paused after)."""
    running = [b["batch_index"] for b in data["batches"] if b["status"] == "PROCESSING"]
    if running:
        return int(running[0])
    if data["status"] == "PAUSED":
        ran = [b["batch_index"] for b in data["batches"] if b["status"] == "FINISHED"]
        return int(ran[-1]) if ran else None
    return None


def order_summary(data: Execution) -> dict[str, Any]:
    current = current_batch(data)
    return {
        "execute_uuid": data["execute_uuid"],
        "order_id": order_id(data),
        "order_name": data["script_name"],
        "gmt_created": _ms(data["created_at"]),
        "gmt_finished": _ms(data.get("finished_at")),
        "execute_costs": _seconds(data["created_at"], data.get("finished_at")),
        "creator": data.get("creator"),
        "status": order_status(data),
        "rehost_status": data["status"],
        "properties": {
            "script_uuid": data["script_uuid"],
            "script_name": data["script_name"],
            "current_execute_batch_index": current,
            "execute_param": {
                "timeout": data["timeout"],
                "success_rate": float(Decimal(data["success_rate"])),
                "execute_user": data["execute_user"],
                "script_params": [masked(p) for p in data["script_params"]],
            },
        },
        "batch_count": len(data["batches"]),
        "statistics": statistics(data),
    }


def batch_summaries(data: Execution) -> list[dict[str, Any]]:
    return [
        {
            "batch_index": b["batch_index"],
            "total_instances": len(b["hosts"]),
            "rotation_strategy": b["rotation_strategy"],
            "status": b["status"],
            "success_rate": b.get("success_rate"),
            "statistics": host_statistics(b["hosts"]),
        }
        for b in data["batches"]
    ]


def order_id(data: Execution) -> int:
    """The execution's number in the order list (its creation in microseconds): newest
    first, and `marker` pages on it."""
    return int(data["created_at"] * 1_000_000)


def order_matches(data: Execution, query: OrderQuery) -> bool:
    created = _ms(data["created_at"]) or 0
    return (
        (query.status is None or order_status(data) == query.status)
        and (query.marker is None or order_id(data) < query.marker)
        and (query.start_time is None or created >= query.start_time)
        and (query.end_time is None or created <= query.end_time)
        and (query.creator is None or data.get("creator") == query.creator)
    )


def order_statistics(data: Execution) -> dict[str, Any]:
    """`JobScriptOrderStatisticsModel`: hosts by the page's status, with their batches;
    Rehost adds `statistics`, the count of each finer status."""
    by_status: dict[str, tuple[int, list[int]]] = {}
    for batch in data["batches"]:
        for host in batch["hosts"]:
            count, indexes = by_status.get(HOST_STATUS[host["status"]], (0, []))
            if batch["batch_index"] not in indexes:
                indexes = [*indexes, batch["batch_index"]]
            by_status[HOST_STATUS[host["status"]]] = (count + 1, indexes)
    return {
        "total_instance": sum(count for count, _ in by_status.values()),
        "execute_statistics": [
            {"instance_status": status, "instance_count": count, "batch_indexes": indexes}
            for status in COC_HOST_STATUSES
            if status in by_status
            for count, indexes in [by_status[status]]
        ],
        "statistics": statistics(data),
    }


def batch_detail(
    batch: Batch,
    outputs: dict[str, dict[str, Any]],
    *,
    status: str | None = None,
    marker: int | None = None,
    limit: int = 50,
) -> dict[str, Any]:
    """One batch's hosts, as `GetScriptJobBatch` pages them: those of `status` (the page's
    names), after the instance id `marker`, at most `limit`."""
    hosts = [
        h
        for h in batch["hosts"]
        if (status is None or HOST_STATUS[h["status"]] == status)
        and (marker is None or h["instance_id"] > marker)
    ][:limit]
    instances = []
    for host in hosts:
        output = outputs.get(host.get("run_id") or "", {})
        duration = host.get("duration_ms")
        instances.append(
            {
                "id": host["instance_id"],
                "target_instance": {
                    k: host[k] for k in ("resource_id", "agent_sn", "region_id", "project_id")
                },
                "gmt_created": _ms(host.get("started_at")),
                "gmt_finished": _ms(host.get("finished_at")),
                "execute_costs": None if duration is None else round(duration / 1000),
                "status": HOST_STATUS[host["status"]],
                "rehost_status": host["status"],
                "message": host.get("error") or output.get("stdout"),
                "exit_code": host.get("exit_code"),
                "stdout": output.get("stdout"),
                "stderr": output.get("stderr"),
                "dropped_bytes": output.get("dropped_bytes", 0),
            }
        )
    return {
        "batch_index": batch["batch_index"],
        "total_instances": len(batch["hosts"]),
        "status": batch["status"],
        "rotation_strategy": batch["rotation_strategy"],
        "success_rate": batch.get("success_rate"),
        "execute_instances": instances,
    }

"""What the COC script-job reads answer: an execution, its batches, one batch's hosts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .executions import statistics


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, UTC).isoformat()


def order_summary(data: dict[str, Any]) -> dict[str, Any]:
    current = next((b["batch_index"] for b in data["batches"] if b["status"] == "PROCESSING"), None)
    return {
        "execute_uuid": data["execute_uuid"],
        "script_uuid": data["script_uuid"],
        "script_name": data["script_name"],
        "status": data["status"],
        "timeout": data["timeout"],
        "success_rate": data["success_rate"],
        "execute_user": data["execute_user"],
        "current_batch": current,
        "batch_count": len(data["batches"]),
        "statistics": statistics(data),
        "start_time": _iso(data["created_at"]),
        "end_time": _iso(data.get("finished_at")),
    }


def batch_summaries(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "batch_index": b["batch_index"],
            "status": b["status"],
            "rotation_strategy": b["rotation_strategy"],
            "success_rate": b.get("success_rate"),
            "statistics": statistics({"batches": [b]}),
        }
        for b in data["batches"]
    ]


def batch_detail(batch: dict[str, Any], outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    instances = []
    for host in batch["hosts"]:
        output = outputs.get(host.get("run_id") or "", {})
        instances.append(
            {
                "instance_id": host["instance_id"],
                "resource_id": host["resource_id"],
                "agent_sn": host["agent_sn"],
                "region_id": host["region_id"],
                "project_id": host["project_id"],
                "status": host["status"],
                "exit_code": host.get("exit_code"),
                "error": host.get("error"),
                "duration_ms": host.get("duration_ms"),
                "start_time": _iso(host.get("started_at")),
                "end_time": _iso(host.get("finished_at")),
                "stdout": output.get("stdout"),
                "stderr": output.get("stderr"),
                "dropped_bytes": output.get("dropped_bytes", 0),
            }
        )
    return {
        "batch_index": batch["batch_index"],
        "status": batch["status"],
        "rotation_strategy": batch["rotation_strategy"],
        "success_rate": batch.get("success_rate"),
        "instances": instances,
    }

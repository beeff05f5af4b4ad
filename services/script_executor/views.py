"""What the COC script-job reads answer: an execution, its batches, one batch's hosts.

The shapes are those of the official COC SDK's models (`JobScriptOrderInfoModel`,
`JobScriptBatchListModel`, `JobScriptBatchDetailModel`), with times in epoch
milliseconds; Rehost adds `statistics`, and each host's exit code and output.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from .executions import statistics
from .scripts import masked


def _ms(stamp: float | None) -> int | None:
    return None if stamp is None else int(stamp * 1000)


def _costs(started: float | None, finished: float | None) -> int | None:
    return None if started is None or finished is None else int((finished - started) * 1000)


def order_summary(data: dict[str, Any]) -> dict[str, Any]:
    current = next((b["batch_index"] for b in data["batches"] if b["status"] == "PROCESSING"), None)
    return {
        "execute_uuid": data["execute_uuid"],
        "gmt_created": _ms(data["created_at"]),
        "gmt_finished": _ms(data.get("finished_at")),
        "execute_costs": _costs(data["created_at"], data.get("finished_at")),
        "creator": data.get("creator"),
        "status": data["status"],
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


def batch_summaries(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "batch_index": b["batch_index"],
            "total_instances": len(b["hosts"]),
            "rotation_strategy": b["rotation_strategy"],
            "status": b["status"],
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
                "id": host["instance_id"],
                "target_instance": {
                    k: host[k] for k in ("resource_id", "agent_sn", "region_id", "project_id")
                },
                "gmt_created": _ms(host.get("started_at")),
                "gmt_finished": _ms(host.get("finished_at")),
                "execute_costs": host.get("duration_ms"),
                "status": host["status"],
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

"""`rehost watch`: migrations and script executions as they happen, in a terminal.

The same view as the console's, for an operator on a server without a browser: it reads
the state from the documented API and redraws when the gateway's live stream
(`/console/stream`) says something changed; when the stream drops it reconnects and reads
everything again. The token comes from `REHOST_TOKEN` (never an argument: arguments show
in process lists and shell histories).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

FOLLOWED = ("task.", "script.")
COLOURS = {"FINISHED": "green", "MIGRATE_SUCCESS": "green", "ABNORMAL": "red", "CANCELED": "red"}


@dataclass(frozen=True)
class Watched:
    task_id: str | None = None
    execute_uuid: str | None = None

    @property
    def tasks(self) -> bool:
        return self.task_id is not None or self.execute_uuid is None

    @property
    def executions(self) -> bool:
        return self.execute_uuid is not None or self.task_id is None


async def _json(http: httpx.AsyncClient, path: str) -> Any:
    response = await http.get(path)
    response.raise_for_status()
    return response.json()


async def tasks(http: httpx.AsyncClient, watched: Watched) -> list[dict[str, Any]]:
    if watched.task_id is not None:
        return [await _json(http, f"/v3/tasks/{watched.task_id}")]
    return list((await _json(http, "/v3/tasks?limit=20"))["tasks"])


async def executions(http: httpx.AsyncClient, watched: Watched) -> list[dict[str, Any]]:
    orders = "/v1/job/script/orders"
    if watched.execute_uuid is not None:
        found = [(await _json(http, f"{orders}/{watched.execute_uuid}"))["data"]]
    else:
        found = (await _json(http, f"{orders}?limit=5"))["data"]["data"]
    for order in found:
        uuid = order["execute_uuid"]
        batches = (await _json(http, f"{orders}/{uuid}/batches"))["data"]
        order["batches"] = [
            (await _json(http, f"{orders}/{uuid}/batches/{b['batch_index']}?limit=50"))["data"]
            for b in batches
        ]
    return list(found)


def _status(value: str) -> Text:
    return Text(value, style=COLOURS.get(value, "cyan"))


def task_view(task: dict[str, Any]) -> RenderableType:
    table = Table.grid(padding=(0, 1))
    speed = task.get("migrate_speed")
    left = task.get("remain_seconds")
    figures = " · ".join(
        f for f in (f"{speed} Mbit/s" if speed is not None else "", _left(left)) if f
    )
    table.add_row(Text(task["name"], style="bold"), _status(task["state"]), Text(figures))
    for sub in task.get("sub_tasks") or []:
        table.add_row(
            Text(f"  {sub['name']}"),
            ProgressBar(total=100, completed=sub["progress"], width=30),
            Text(f"{sub['progress']}%"),
        )
    return table


def _left(seconds: int | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds // 60} min left" if seconds >= 60 else f"{seconds} s left"


def execution_view(order: dict[str, Any]) -> RenderableType:
    table = Table.grid(padding=(0, 1))
    table.add_row(Text(order["order_name"], style="bold"), _status(order["status"]), Text(""))
    for batch in order["batches"]:
        hosts = batch["execute_instances"]
        done = sum(1 for h in hosts if h["status"] in ("FINISHED", "ABNORMAL", "CANCELED"))
        table.add_row(
            Text(f"  batch {batch['batch_index']}"),
            ProgressBar(total=max(len(hosts), 1), completed=done, width=30),
            Text(f"{done}/{len(hosts)} hosts {batch['status']}"),
        )
    return table


def view(found_tasks: list[dict[str, Any]], found: list[dict[str, Any]]) -> RenderableType:
    parts: list[RenderableType] = []
    if found_tasks:
        parts += [Text("Migration tasks", style="underline"), *map(task_view, found_tasks)]
    if found:
        parts += [Text("Script executions", style="underline"), *map(execution_view, found)]
    return Group(*parts) if parts else Text("nothing to watch yet")


async def snapshot(http: httpx.AsyncClient, watched: Watched) -> RenderableType:
    found_tasks = await tasks(http, watched) if watched.tasks else []
    found = await executions(http, watched) if watched.executions else []
    return view(found_tasks, found)


async def events(http: httpx.AsyncClient) -> AsyncIterator[str]:
    """The type of each event the gateway streams, and "resync" whenever the stream was
    (re)connected or says events may have been missed; it reconnects by itself."""
    delay = 1.0
    while True:
        try:
            async with http.stream("GET", "/console/stream", timeout=None) as response:
                response.raise_for_status()
                delay = 1.0
                yield "resync"
                kind = ""
                async for line in response.aiter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "rehost":
                        yield str(json.loads(line[6:]).get("type", ""))
                    elif line.startswith("data: ") and kind == "resync":
                        yield "resync"
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 401:
                raise
        except httpx.TransportError:
            pass
        await asyncio.sleep(delay)
        delay = min(delay * 2, 10.0)


async def watch(url: str, token: str, watched: Watched, console: Console) -> None:
    headers = {"X-Auth-Token": token}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        with Live(await snapshot(http, watched), console=console, refresh_per_second=4) as live:
            async for kind in events(http):
                if kind == "resync" or kind.startswith(FOLLOWED):
                    live.update(await snapshot(http, watched))

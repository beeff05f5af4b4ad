"""How stale an agent's poll may be, now that the gateway answers it from a read model.

Two measures, on connections spread over the gateway's processes (each keeps a model of
its own, so a poll may meet a process other than the one that relayed a change):

- *handed out after queued*: a task is started (its START is queued for the agent); the
  time from the start's 200 until a poll answers START;
- *stale after answered*: an agent reports START's result; for a while after the 200,
  polls go out as fast as they can; how many still answered START, and until when;
- *recorded after answered*: an agent reports a result; the time from its 200 until the
  server's history (`GET …/command_results`, asked again at once) lists it, since the
  registry answers a result before command-result records it.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from bench.fixtures import answered, start_tasks

CONNECTIONS = 8


class _Polls:
    """Keep-alive connections, a poll at a time on each, taken in turn."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.token = token
        self._streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._turn = 0

    async def open(self) -> None:
        for _ in range(CONNECTIONS):
            self._streams.append(await asyncio.open_connection(self.host, self.port))

    def close(self) -> None:
        for _, writer in self._streams:
            writer.close()

    async def command_name(self, server_id: str) -> str:
        reader, writer = self._streams[self._turn % len(self._streams)]
        self._turn += 1
        writer.write(
            f"GET /v3/sources/{server_id}/command HTTP/1.1\r\nHost: {self.host}\r\n"
            f"X-Auth-Token: {self.token}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        return str(json.loads(await reader.readexactly(length))["command_name"])


@dataclass(frozen=True)
class Freshness:
    handed_out_ms: list[float]  # one per task started
    stale_polls: int
    polls_after_answer: int
    stale_until_ms: float  # the latest a poll still answered the answered command
    recorded_ms: list[float]  # one per result reported

    def describe(self) -> tuple[str, str, str]:
        stale = (
            f"{self.stale_polls} of {self.polls_after_answer} polls, the last "
            f"{self.stale_until_ms:.1f} ms after the 200"
        )
        return _spread(self.handed_out_ms), stale, _spread(self.recorded_ms)


def _spread(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[int(len(ordered) * 0.99) - 1]
    return f"median {statistics.median(ordered):.1f}, p99 {p99:.1f}, max {ordered[-1]:.1f}"


async def measure(url: str, token: str, servers: list[str], watch: float = 0.2) -> Freshness:
    """`servers`: registered, without tasks, polled once already (so the model holds them)."""
    polls = _Polls(url, token)
    await polls.open()
    headers = {"X-Auth-Token": token}
    try:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            handed = [await _handed_out(http, polls, server_id) for server_id in servers]
            stale = [await _stale(http, polls, server_id, watch) for server_id in servers]
            recorded = [await _recorded(http, server_id) for server_id in servers]
    finally:
        polls.close()
    return Freshness(
        handed_out_ms=handed,
        stale_polls=sum(count for count, _, _ in stale),
        polls_after_answer=sum(total for _, total, _ in stale),
        stale_until_ms=max(until for _, _, until in stale),
        recorded_ms=recorded,
    )


async def _handed_out(http: httpx.AsyncClient, polls: _Polls, server_id: str) -> float:
    assert await polls.command_name(server_id) == ""
    await start_tasks(http, [server_id])
    started = time.perf_counter()  # the start's 200
    while await polls.command_name(server_id) != "START":
        pass  # polled again at once: each poll is a round trip
    return (time.perf_counter() - started) * 1000


async def _stale(
    http: httpx.AsyncClient, polls: _Polls, server_id: str, watch: float
) -> tuple[int, int, float]:
    """(polls that still answered START, polls, ms after the 200 of the last such)."""
    result = {"command_name": "START", "result": "success", "result_detail": {"msg": "ok"}}
    await answered(http, f"/v3/sources/{server_id}/command_result", result)
    answered_at = time.perf_counter()
    stale, total, until = 0, 0, 0.0
    while (elapsed := time.perf_counter() - answered_at) < watch:
        total += 1
        if await polls.command_name(server_id) == "START":
            stale, until = stale + 1, elapsed * 1000
    return stale, total, until


async def _recorded(http: httpx.AsyncClient, server_id: str) -> float:
    history = f"/v3/sources/{server_id}/command_results"
    before = (await http.get(history)).json()["count"]
    result = {"command_name": "UPLOAD_LOG", "result": "success", "result_detail": {"n": 1}}
    await answered(http, f"/v3/sources/{server_id}/command_result", result)
    answered_at = time.perf_counter()
    while (await http.get(history)).json()["count"] == before:
        pass  # asked again at once: each question is a round trip to command-result
    return (time.perf_counter() - answered_at) * 1000

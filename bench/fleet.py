"""A fleet of agents on one machine: N agents, each with its own source server, asking for
their next command every 5 s, one in ten also reporting its task's progress every 10 s.

Open loop: every agent keeps its own schedule (a random phase, ±10 % jitter on each
period) whatever the answers take, so the rate is what the fleet asks, not what the
server allows; a request's latency counts from the moment it was due, so one that waits
for a connection is measured waiting. Connections are kept alive and shared by the
agents, as a fleet behind one NAT would; the client is a bare asyncio protocol, since it
shares the two cores with what it measures (its own CPU is reported).

`largest_fleet` steps N up and reports the largest fleet that holds: p99 of the polls and
p99 of the progress reports each ≤ 100 ms, and no request answered other than 200 or not
at all. (A fleet whose polls are quick while its progress reports wait a second is not
served: the operator's console shows those reports.)
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.fixtures import progress_report
from bench.load import percentile

POLL_EVERY = 5.0
PROGRESS_EVERY = 10.0
JITTER = 0.1
TARGET_P99_MS = 100.0
MAX_CONNECTIONS = 512
# How an agent proves who it is: (method, path, body) → the headers that say so.
Auth = Callable[[str, str, str], dict[str, str]]
_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)


@dataclass
class _Outcomes:
    polls: list[float] = field(default_factory=list)  # ms, counted requests only
    progress: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time."""

    def __init__(self, fleet: _Client) -> None:
        self.fleet = fleet
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.request: tuple[bytes, float, str, bool] | None = None  # bytes, due, kind, counted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: tuple[bytes, float, str, bool]) -> None:
        assert self.transport is not None
        self.request = request
        self.transport.write(request[0])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        found = _LENGTH.search(self.buffer, 0, end + 2)
        length = int(found.group(1)) if found else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        del self.buffer[: end + 4 + length]
        request, self.request = self.request, None
        assert request is not None
        self.fleet.answered(self, request, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fleet.lost(self, self.request)


class _Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.loop = asyncio.get_running_loop()
        self.idle: list[_Connection] = []
        self.opening = 0
        self.open = 0
        self.backlog: deque[tuple[bytes, float, str, bool]] = deque()
        self.outcomes = _Outcomes()
        self.in_flight = 0
        self.drained = asyncio.Event()

    def fire(self, request: tuple[bytes, float, str, bool]) -> None:
        self.in_flight += 1
        self.drained.clear()
        if self.idle:
            self.idle.pop().send(request)
        elif self.open + self.opening < MAX_CONNECTIONS:
            self.opening += 1
            self.loop.create_task(self._open(request))
        else:
            self.backlog.append(request)

    async def _open(self, request: tuple[bytes, float, str, bool]) -> None:
        try:
            _, connection = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError:
            self.opening -= 1
            self._finish(request, 0)
            return
        self.opening -= 1
        self.open += 1
        connection.send(request)

    def answered(
        self, connection: _Connection, request: tuple[bytes, float, str, bool], status: int
    ) -> None:
        self._finish(request, status)
        if self.backlog:
            connection.send(self.backlog.popleft())
        else:
            self.idle.append(connection)

    def lost(self, connection: _Connection, request: tuple[bytes, float, str, bool] | None) -> None:
        self.open -= 1
        if connection in self.idle:
            self.idle.remove(connection)
        if request is not None:
            # Closed under a request (an idle connection the server timed out as we sent):
            # nothing was answered, so it goes again on a new connection.
            self.in_flight -= 1
            self.fire(request)

    def _finish(self, request: tuple[bytes, float, str, bool], status: int) -> None:
        _, due, kind, counted = request
        self.in_flight -= 1
        if counted:
            latency = (self.loop.time() - due) * 1000
            (self.outcomes.polls if kind == "poll" else self.outcomes.progress).append(latency)
            self.outcomes.statuses[status] = self.outcomes.statuses.get(status, 0) + 1
            if status != 200:
                self.outcomes.errors += 1
        if self.in_flight == 0:
            self.drained.set()


@dataclass(frozen=True)
class FleetRun:
    agents: int
    polls_per_s: float
    progress_per_s: float
    p50_ms: float
    p99_ms: float
    progress_p99_ms: float
    errors: int
    client_cores: float

    @property
    def holds(self) -> bool:
        return (
            self.errors == 0
            and self.p99_ms <= TARGET_P99_MS
            and (math.isnan(self.progress_p99_ms) or self.progress_p99_ms <= TARGET_P99_MS)
        )

    def describe(self) -> str:
        return (
            f"{self.agents} agents: {self.polls_per_s:.0f} polls/s p50 {self.p50_ms:.1f} "
            f"p99 {self.p99_ms:.1f} ms, {self.progress_per_s:.0f} progress/s p99 "
            f"{self.progress_p99_ms:.1f} ms, {self.errors} errors; client {self.client_cores:.2f}"
            f" cores — {'holds' if self.holds else 'does not hold'}"
        )


def _request(host: str, method: str, path: str, auth: Auth, body: bytes = b"") -> bytes:
    headers = {"Host": host, **auth(method, path, body.decode())}
    if body:
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def with_token(token: str) -> Auth:
    """An agent's credentials as a token (an SDK's signature: bench.signing.signer)."""
    return lambda *_: {"X-Auth-Token": token}


def _progress_body(task_index: int) -> bytes:
    return json.dumps(progress_report(1 + task_index % 98)).encode()


def _schedule(
    every: float, count: int, until: float, rng: random.Random
) -> list[tuple[float, int]]:
    """(due time, agent) for `count` agents asking every `every` seconds until `until`."""
    due = []
    for agent in range(count):
        at = rng.uniform(0, every)
        while at < until:
            due.append((at, agent))
            at += every * (1 + rng.uniform(-JITTER, JITTER))
    return due


async def run_fleet(
    url: str,
    auth: Auth,
    servers: Sequence[str],
    tasks: Sequence[str],
    *,
    warmup: float = 3 * POLL_EVERY,
    seconds: float = 20.0,
    seed: int = 7,
) -> FleetRun:
    """One fleet: an agent for each of `servers`, and for each of `tasks` a progress report
    every 10 s; the first `warmup` seconds are not counted (the first polls, which teach
    each gateway process what it does not know yet: a server polled twice may meet both
    processes once)."""
    host = urlsplit(url).netloc
    polls = [_request(host, "GET", f"/v3/sources/{s}/command", auth) for s in servers]
    reports = [
        _request(host, "PUT", f"/v3/tasks/{t}/progress", auth, _progress_body(i))
        for i, t in enumerate(tasks)
    ]
    rng = random.Random(seed)
    until = warmup + seconds
    events = [(at, polls[i], "poll") for at, i in _schedule(POLL_EVERY, len(polls), until, rng)]
    events += [
        (at, reports[i], "progress")
        for at, i in _schedule(PROGRESS_EVERY, len(reports), until, rng)
    ]
    events.sort(key=lambda event: event[0])
    client = _Client(url)
    loop = client.loop
    cpu_started = time.process_time()
    start = loop.time()
    for at, request, kind in events:
        delay = start + at - loop.time()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        client.fire((request, start + at, kind, at >= warmup))
    with_timeout = asyncio.wait_for(client.drained.wait(), timeout=30)
    try:
        await with_timeout
    except TimeoutError:
        client.outcomes.errors += client.in_flight
    elapsed = loop.time() - start
    cores = (time.process_time() - cpu_started) / elapsed
    out = client.outcomes
    out.polls.sort()
    out.progress.sort()
    return FleetRun(
        agents=len(servers),
        polls_per_s=len(out.polls) / seconds,
        progress_per_s=len(out.progress) / seconds,
        p50_ms=percentile(out.polls, 0.5),
        p99_ms=percentile(out.polls, 0.99),
        progress_p99_ms=percentile(out.progress, 0.99),
        errors=out.errors,
        client_cores=cores,
    )


async def largest_fleet(
    url: str,
    auth: Auth,
    servers: Sequence[str],
    tasks: Sequence[str],
    steps: Sequence[int],
    seconds: float = 20.0,
) -> tuple[FleetRun | None, list[FleetRun]]:
    """Steps the fleet up through `steps` (agents; the first tenth of them report the
    progress of `tasks`) until one does not hold twice running (a single stall of this
    shared machine moves one run's p99 by tens of milliseconds): the largest that held,
    and every run."""
    runs: list[FleetRun] = []
    best = None
    for agents in steps:
        reporting = tasks[: agents // 10]
        for _ in range(2):
            run = await run_fleet(url, auth, servers[:agents], reporting, seconds=seconds)
            print(f"fleet: {run.describe()}", file=sys.stderr, flush=True)  # beside the table
            runs.append(run)
            if run.holds:
                break
        if not run.holds:
            break
        best = run
    return best, runs

"""Load: wrk for throughput at a concurrency, and an open-loop client for latency at a rate."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

LUA = """
wrk.method = "{method}"
wrk.headers["Content-Type"] = "application/json"
{headers}
local bodies = {bodies}
local counter = 0
-- Each wrk thread has its own Lua state: start them at different places in the list,
-- or both would send the same requests (and the second copy would be a no-op or a 409).
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
function init(args)
  counter = (id or 0) * math.floor(#bodies / 2)
end
request = function()
  counter = counter + 1
  local body = bodies[(counter % #bodies) + 1]
  local path = "{path}"
  local headers = nil
  if type(body) == "table" then
    path = body[1]; headers = body[3]; body = body[2]
  end
  return wrk.format(nil, path, headers, body)
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int = 0


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


Request = str | tuple[str, str] | tuple[str, str, dict[str, str]]


def _lua_item(item: Request) -> str:
    if isinstance(item, str):
        return _lua_string(item)
    path, body = item[0], item[1]
    if len(item) == 2:  # no headers of its own: wrk's defaults (token, content type) apply
        return "{" + _lua_string(path) + "," + _lua_string(body) + "}"
    headers = item[2]
    table = (
        "{" + ",".join(f"[ {_lua_string(k)} ]={_lua_string(v)}" for k, v in headers.items()) + "}"
    )
    return "{" + _lua_string(path) + "," + _lua_string(body) + "," + table + "}"


def wrk(
    url: str,
    path: str,
    bodies: Sequence[Request],
    headers: dict[str, str],
    *,
    seconds: int,
    connections: int = 64,
    threads: int = 2,
    method: str = "POST",
) -> Result:
    """Throughput and latency at `connections` concurrent connections (wrk -t2 -c64)."""
    if shutil.which("wrk") is None:
        raise SystemExit("bench needs wrk: apt-get install wrk")
    items = [_lua_item(item) for item in bodies]
    script = LUA.format(
        method=method,
        path=path,
        headers="\n".join(f'wrk.headers["{k}"] = {_lua_string(v)}' for k, v in headers.items()),
        bodies="{" + ",".join(items) + "}",
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            lua.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(lua.name).unlink()
    return Result(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_latency(out, "50%"),
        p99_ms=_latency(out, "99%"),
        errors=int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0,
    )


def _latency(out: str, percentile: str) -> float:
    match = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", out)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


class _Connections:
    """Keep-alive HTTP/1.1 connections, each carrying one request at a time.

    A bare client on asyncio streams, not httpx: the load generator shares the machine it
    measures, and httpx would spend about a third of a core sending a few hundred
    requests a second, which the services under test would then miss."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._all: list[asyncio.StreamWriter] = []

    def request(self, path: str, body: str, headers: dict[str, str], method: str = "POST") -> bytes:
        payload = body.encode()
        lines = [
            f"{method} {path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(payload)}",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._all.append(writer)
        return reader, writer

    async def send(self, request: bytes) -> int:
        """Sends one request; its response's status code."""
        reader, writer = self._idle.pop() if self._idle else await self._open()
        writer.write(request)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            if isinstance(exc, asyncio.IncompleteReadError) and exc.partial:
                raise
            # The server closed this connection while it sat idle (uvicorn keeps one
            # alive for 5 s): nothing was answered, so send it again on a new one.
            reader, writer = await self._open()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
        self._idle.append((reader, writer))
        return status

    def close(self) -> None:
        for writer in self._all:
            writer.close()


async def at_rate(
    url: str,
    requests: list[tuple[str, str]],
    headers: dict[str, str],
    rate: float,
    seconds: float,
    warmup: float = 2.0,
    method: str = "POST",
) -> Result:
    """Latency when requests arrive at `rate` per second (open loop: no waiting for answers).

    A request's latency counts from the moment it was due, so a client late to send it is
    measured late. The client keeps only the requests in flight: holding every finished
    one made its garbage collector walk them all once a run (a 40 ms pause, charged to
    the requests then in flight and the burst sent after it), and waiting for all of them
    at the end took 20 ms of the loop while the last ones were answered.

    The first `warmup` seconds run at the same rate but are not counted: they open the
    client's connections and let the services finish what the previous load left in flight
    (a queue reads empty while its consumers still hold up to a prefetch of messages)."""
    latencies: list[float] = []
    errors = 0
    connections = _Connections(url)
    encoded = [connections.request(path, body, headers, method) for path, body in requests]
    in_flight: set[asyncio.Task[None]] = set()

    async def one(request: bytes, due: float, counted: bool) -> None:
        nonlocal errors
        try:
            failed = await connections.send(request) >= 300
        except (OSError, asyncio.IncompleteReadError):
            failed = True
        if counted:
            errors += failed
            latencies.append((time.perf_counter() - due) * 1000)

    first = start = time.perf_counter()
    skipped = int(rate * warmup)
    try:
        for i in range(skipped + int(rate * seconds)):
            due = first + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if i == skipped:
                start = due
            request = encoded[i % len(encoded)]
            task = asyncio.create_task(one(request, due, counted=i >= skipped))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)  # every request is sent: only these are left
    finally:
        connections.close()
    latencies.sort()
    return Result(
        rps=len(latencies) / (time.perf_counter() - start),
        p50_ms=latencies[len(latencies) // 2],
        p99_ms=latencies[int(len(latencies) * 0.99) - 1],
        errors=errors,
    )


def percentile(ordered: list[float], q: float) -> float:
    """The value at fraction `q` of `ordered` (sorted), NaN when there is none."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def bodies_json(items: list[dict[str, object]]) -> list[str]:
    return [json.dumps(i) for i in items]

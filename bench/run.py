"""`make bench` / `make bench-quick`: Rehost's figures beside the ceilings of its parts.

Everything runs on this machine in one go, against the local RabbitMQ (a vhost of
its own): the ceilings first, then the system, so every ratio compares figures
taken minutes apart on the same hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aio_pika
import httpx

from bench import fanout, signing
from bench.cpu import CpuShare
from bench.fixtures import (
    DOMAIN,
    SECRET,
    SMALL,
    preload_registers,
    progress_report,
    register_bodies,
    registered,
    small_bodies,
    start_tasks,
    started_servers,
    token,
)
from bench.fleet import largest_fleet, run_fleet, with_token
from bench.freshness import measure as measure_freshness
from bench.load import Result, at_rate, wrk
from bench.machine import Machine, MachineProbe
from bench.records import record_costs
from shared.config import Settings
from tests.support import broker, mongo
from tests.support.integrator import event_tap
from tests.support.processes import System, free_port

T = TypeVar("T")


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def ceiling_http(app: str, amqp_url: str, seconds: int) -> tuple[Result, Machine | None]:
    port = free_port()
    env = {**os.environ, "REHOST_AMQP_URL": amqp_url}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"bench.ceiling_apps:{app}",
            "--workers",
            "2",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    try:
        wait_port(port)
        time.sleep(1)
        with MachineProbe() as probe:
            result = wrk(f"http://127.0.0.1:{port}", "/bench", [SMALL], {}, seconds=seconds)
        return result, probe.machine
    finally:
        server.terminate()
        server.wait(10)


async def raw_publish(amqp_url: str, count: int, queue: str) -> float:
    """Pipelined confirmed publishes to a quorum queue: messages per second."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        body = SMALL.encode()
        window = asyncio.Semaphore(512)

        async def one() -> None:
            async with window:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, delivery_mode=2), routing_key=queue
                )

        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return count / (time.perf_counter() - started)


async def raw_consume(amqp_url: str, count: int, queue: str) -> float:
    """Consume and ack with prefetch: messages per second."""
    connection = await aio_pika.connect_robust(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=256)
        q = await channel.declare_queue(queue, durable=True, arguments={"x-queue-type": "quorum"})
        done = asyncio.Event()
        seen = 0

        async def on(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen >= count:
                done.set()

        started = time.perf_counter()
        await q.consume(on)
        await done.wait()
        return count / (time.perf_counter() - started)


def start_system(
    amqp_url: str,
    workdir: Path,
    gateway_workers: int = Settings().gateway_workers,  # as `make run` starts it
    registry_replicas: int = 1,
    store_url: str = "",
) -> System:
    keys = workdir / "access-keys.jsonl"
    keys.write_text(signing.key_line(DOMAIN) + "\n")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REHOST_")},
        "REHOST_AMQP_URL": amqp_url,
        "REHOST_DATA_DIR": str(workdir / "var"),
        "REHOST_STORE_URL": store_url,
        "REHOST_AUTH_SECRET": SECRET,
        "REHOST_ACCESS_KEYS": str(keys),
        "REHOST_LOG_LEVEL": "WARNING",
        "REHOST_LOG_FORMAT": "json",
        "REHOST_GATEWAY_WORKERS": str(gateway_workers),
        "REHOST_MAX_IN_FLIGHT": "4096",
        "REHOST_AGENT_DOMAIN": DOMAIN,
        "REHOST_AGENT_TRUST_ON_FIRST_USE": "true",  # the fan-out's agents bind themselves
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    system = System(env, workdir)
    system.add("registry", "REHOST_REGISTRY_HEALTH_PORT")
    for replica in range(2, registry_replicas + 1):  # the same store, the same queue
        system.add("registry", "REHOST_REGISTRY_HEALTH_PORT", name=f"registry-{replica}")
    system.add("command-result", "REHOST_COMMAND_RESULT_HEALTH_PORT")
    system.add("task-lock", "REHOST_TASK_LOCK_HEALTH_PORT")
    system.add("script-executor", "REHOST_SCRIPT_EXECUTOR_HEALTH_PORT")
    system.add("gateway", None)
    for process in system.processes.values():
        process.start()
    return system


def progress_requests(task_ids: list[str]) -> list[tuple[str, str]]:
    """UpdateTaskSpeed reports as an agent sends them, each task's percent growing."""
    requests = []
    for percent in range(1, 100, 7):
        for task_id in task_ids:
            body = json.dumps(progress_report(percent))
            requests.append((f"/v3/tasks/{task_id}/progress", body))
    return requests


async def progress_rows(
    url: str,
    amqp_url: str,
    servers: list[str],
    task_ids: list[str],
    ceiling: float,
    half_rate: float,
    seconds: int,
) -> list[str]:
    """Progress reports alone, then the command path with and without them beside it, at
    the rate a fleet of 10,000 agents sends them (one in ten every 10 s: 100 a second):
    saturated (throughput) and at half its sustainable rate (tail latency)."""
    reports = progress_requests(task_ids)
    alone = wrk(url, "/", reports, token(), seconds=seconds, method="PUT")
    await drained(amqp_url)
    replay = result_requests(servers)  # a replay: the STARTs and SYNCs are now refused facts
    without = await asyncio.to_thread(wrk, url, "/", replay, token(), seconds=seconds)
    await drained(amqp_url)
    with_progress, fleet = await _beside_progress(
        url, reports, seconds, asyncio.to_thread(wrk, url, "/", replay, token(), seconds=seconds)
    )
    await drained(amqp_url)
    quiet = await at_half_rate(url, replay, half_rate * 2, seconds)
    await drained(amqp_url)
    busy, _ = await _beside_progress(
        url, reports, 3 * (seconds + 2), at_half_rate(url, replay, half_rate * 2, seconds)
    )
    return [
        row(
            "progress reports (UpdateTaskSpeed): req/s at 64 connections",
            rate(alone),
            f"{ceiling:.0f}",
            alone.rps / ceiling,
        ),
        row(
            "command results (saturated) while 100 progress reports/s arrive: req/s, vs without",
            rate(with_progress),
            f"{without.rps:.0f}",
            with_progress.rps / without.rps,
        ),
        row(
            f"command results at {half_rate:.0f} req/s, p99 with 100 progress reports/s beside "
            "(ms), vs without",
            busy.describe(),
            quiet.describe(),
            statistics.median(busy.p99s) / statistics.median(quiet.p99s),
        ),
        row(
            "the progress reports meanwhile (saturated run): p99 (ms)",
            f"{fleet.p99_ms:.1f}" + (f" ({fleet.errors} non-2xx)" if fleet.errors else ""),
            "",
            None,
        ),
    ]


async def _beside_progress(
    url: str, reports: list[tuple[str, str]], seconds: float, measured: Awaitable[T]
) -> tuple[T, Result]:
    """`measured` while progress reports arrive at 100 a second, open loop."""
    beside = asyncio.create_task(
        at_rate(url, reports, token(), 100, seconds + 4, warmup=0, method="PUT")
    )
    await asyncio.sleep(1)
    result = await measured
    return result, await beside


def result_requests(server_ids: list[str], block: int = 100) -> list[tuple[str, str]]:
    """For each block of servers: START, then SYNC (real transitions), then three UPLOAD_LOG
    results, which the lifecycle accepts in any state without a change (each is still
    checked, recorded and announced). In blocks, so that any stretch of the list holds the
    same mix: the latency run at half the rate must meet the requests the throughput run
    met. A list run through again meets STARTs and SYNCs the lifecycle refuses (each still
    recorded and answered 200)."""
    requests = []
    for first in range(0, len(server_ids), block):
        for command in ("START", "SYNC", "UPLOAD_LOG", "UPLOAD_LOG", "UPLOAD_LOG"):
            for server_id in server_ids[first : first + block]:
                body = json.dumps(
                    {"command_name": command, "result": "success", "result_detail": {"msg": "ok"}}
                )
                requests.append((f"/v3/sources/{server_id}/command_result", body))
    return requests


def peak_rss_mb(system: System) -> dict[str, float]:
    return {name: system.rss_kb(name) / 1024 for name in system.processes if name != "gateway"}


def groups(system: System) -> dict[int, str]:
    """Each process's group (its own session), named: where CpuShare counts its CPU."""
    return {p.popen.pid: name for name, p in system.processes.items() if p.popen is not None}


def rss_mb(system: System, name: str) -> float:
    return system.rss_kb(name, "VmRSS") / 1024


async def scaling_shape(amqp_url: str, seconds: int) -> list[str]:
    """Register throughput with 1, 2 and 4 gateway workers, and with 2 registry replicas."""
    lines, first = [], None
    for workers, replicas in ((1, 1), (2, 1), (4, 1), (2, 2)):
        await drained(amqp_url)
        with tempfile.TemporaryDirectory() as tmp:
            system = start_system(amqp_url, Path(tmp), workers, replicas)
            try:
                bodies = register_bodies(5000, f"sc-{uuid.uuid4().hex[:4]}")
                result = wrk(system.gateway_url, "/v3/sources", bodies, token(), seconds=seconds)
                if result.errors:  # what went wrong is in the logs, gone with the directory
                    for name, process in system.processes.items():
                        print(f"--- {name}, after {result.errors} non-2xx:\n{process.tail(15)}")
            finally:
                system.stop_all()
        first = first or result.rps
        name = f"register, {workers} gateway worker(s), {replicas} registry replica(s): req/s"
        lines.append(
            row(name, rate(result), f"{first:.0f} (1 worker, 1 replica)", result.rps / first)
        )
    return lines


async def consumer_throughput(amqp_url: str, system: System, count: int) -> float:
    system["registry"].stop()
    await preload_registers(amqp_url, register_bodies(count, f"pre-{uuid.uuid4().hex[:4]}"))
    async with event_tap(amqp_url, "source.registered", keep=False) as tap:
        started = time.perf_counter()
        system["registry"].start(wait=60)
        await tap.wait_for(count, timeout=3600)
        return count / (time.perf_counter() - started)


async def drained(amqp_url: str, timeout: float = 300) -> None:
    """Waits until no consumed service queue holds messages, so one measure does not pay for
    the last. A queue nobody consumes is not waited for: a system stopped in order leaves
    there what its last service sent to one already stopped (the registry's final records
    for command-result), kept for the next system's service to take."""
    async with asyncio.timeout(timeout):
        while True:
            queues = [
                await broker.declared(amqp_url, f"rehost.{service}")
                for service in ("registry", "command-result", "task-lock")
            ]
            if not any(depth and consumers for depth, consumers in queues):
                return
            await asyncio.sleep(0.5)


async def scripts(system: System, amqp_url: str, hosts: int) -> list[str]:
    async with httpx.AsyncClient(base_url=system.gateway_url, headers=token(), timeout=60) as http:
        fan = await fanout.fan_out(system, amqp_url, http, hosts)
        idle, peak = await fanout.agent_relaying_big_output(system, amqp_url, http)
    return [
        row(
            f"script `true` on {hosts} hosts ({hosts} agent processes), batches of 10: s",
            f"{fan.seconds:.2f}",
            f"{fan.baseline_seconds:.2f} (local subprocesses)",
            fan.seconds / fan.baseline_seconds,
        ),
        row("peak RSS of one agent during the fan-out (MB)", f"{fan.agent_rss_mb:.0f}", "", None),
        row(
            "agent relaying a 5 MB output: peak RSS (MB), vs its peak before",
            f"{peak:.0f}",
            f"{idle:.0f}",
            peak / idle,
        ),
    ]


@dataclass(frozen=True)
class Tail:
    rate: float
    p99s: list[float]  # one per run, in order
    machines: list[Machine | None]  # each run's cores and disk meanwhile (bench/machine.py)
    cpu_us: dict[str, float] = field(default_factory=dict)  # µs of CPU per request, by group

    def describe(self) -> str:
        """The median in bold, then every run with the machine it met: one run's p99 is a
        few dozen requests, and a single stall on this shared machine (a disk that syncs in
        95 ms, two cores slow at once) moves it by tens of milliseconds."""
        runs = " / ".join(f"{p:.1f}" for p in self.p99s)
        return f"**{statistics.median(self.p99s):.1f}** ({runs}); {each_run(self.machines)}"


def each_run(machines: list[Machine | None]) -> str:
    """The machine in each run, in the runs' order: what explains one run's tail."""
    measured = [m for m in machines if m is not None]
    if not measured or len(measured) < len(machines):
        return meanwhile(None)

    def runs(figure: Callable[[Machine], str]) -> str:
        return " / ".join(figure(m) for m in measured)

    return (
        f"the machine in each run: cores slow {runs(lambda m: f'{m.slow_share:.0%}')}, "
        f"steal {runs(lambda m: f'{m.steal:.1%}')}, "
        f"fsync p99 {runs(lambda m: f'{m.fsync.p99_ms:.1f}')} ms, "
        f"max {runs(lambda m: f'{m.fsync.max_ms:.0f}')} ms"
    )


async def probed(
    run: Callable[[], Awaitable[T]], times: int
) -> tuple[list[T], list[Machine | None]]:
    """`run` `times` times, one after the other, each beside a machine probe of its own."""
    results: list[T] = []
    machines: list[Machine | None] = []
    for _ in range(times):
        with MachineProbe() as probe:
            results.append(await run())
        machines.append(probe.machine)
    return results, machines


def meanwhile(machine: Machine | None) -> str:
    return f"the machine meanwhile: {machine.describe() if machine else 'not measured'}"


async def at_half_rate(
    url: str,
    requests: list[tuple[str, str]],
    sustained: float,
    seconds: int,
    runs: int = 3,
    processes: Mapping[int, str] | None = None,
) -> Tail:
    """p99 at half the sustained throughput, over `runs` runs (the target is about the
    typical tail, not the worst stall of one run), the machine in each, and what a request
    cost each of `processes` (groups, as CpuShare counts them) over the runs."""
    rate, warmup = sustained / 2, 2.0
    with CpuShare(processes or {}) as cpu:
        results, machines = await probed(
            lambda: at_rate(url, requests, token(), rate, seconds, warmup), runs
        )
    sent = runs * (int(rate * warmup) + int(rate * seconds))
    return Tail(
        rate=statistics.median(r.rps for r in results),
        p99s=[r.p99_ms for r in results],
        machines=machines,
        cpu_us=cpu.per_request_us(sent) if processes else {},
    )


@contextmanager
def paused(system: System, name: str) -> Iterator[None]:
    """The process `name` stopped (SIGSTOP) meanwhile: what it is sent waits in its queue."""
    popen = system.processes[name].popen
    assert popen is not None, f"{name} is not running"
    os.killpg(popen.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(popen.pid, signal.SIGCONT)


def cost_row(what: str, half: Tail, saturated: CpuShare, answered: float) -> str:
    """The machine's CPU per request at half rate beside its CPU per request saturated,
    by process: how much of the machine half the rate keeps busy, and where."""
    at_full = saturated.per_request_us(answered)
    ranked = sorted(half.cpu_us.items(), key=lambda item: -item[1])
    shown = ", ".join(f"{name} {us:,.0f} vs {at_full.get(name, 0):,.0f}" for name, us in ranked)
    total_half, total_full = sum(half.cpu_us.values()), sum(at_full.values())
    return row(
        f"{what}: the machine's µs of CPU per request at half rate, vs saturated",
        f"{total_half:,.0f} ({shown})",
        f"{total_full:,.0f}",
        total_half / total_full if total_full else None,
    )


def row(name: str, value: str, ceiling: str, ratio: float | None) -> str:
    shown = "" if ratio is None else f"{ratio:.2f}"
    return f"| {name} | {value} | {ceiling} | {shown} |"


def rate(result: Result) -> str:
    """Requests per second, and how many answers were not 2xx (refusals, 503s)."""
    return f"{result.rps:.0f}" + (f" ({result.errors} non-2xx)" if result.errors else "")


async def mongodb_rows(
    amqp_url: str, ceiling: float, sqlite: dict[str, float], seconds: int, quick: bool
) -> list[str]:
    """Register and command results with every service on the MongoDB adapter (SecantusDB,
    or REHOST_TEST_MONGODB_URL's server), beside the same on SQLite."""
    await drained(amqp_url)
    with tempfile.TemporaryDirectory() as tmp, mongo.mongodb(Path(tmp)) as server:
        system = start_system(amqp_url, Path(tmp), store_url=f"{server}/rehost_bench")
        try:
            url = system.gateway_url
            bodies = register_bodies(5000, f"mreg-{uuid.uuid4().hex[:4]}")
            register = wrk(url, "/v3/sources", bodies, token(), seconds=seconds)
            await drained(amqp_url)
            servers, _ = await started_servers(url, 200 if quick else 1000)
            results = wrk(url, "/", result_requests(servers), token(), seconds=seconds)
            # The emulator lags: what it still owes must be done before its services stop,
            # or the next part waits for queues no one consumes.
            await drained(amqp_url)
        finally:
            system.stop_all()
    return [
        row(
            "register on MongoDB (every service): req/s, vs on SQLite",
            f"{rate(register)} ({register.rps / ceiling:.2f} of the ceiling)",
            f"{sqlite['register']:.0f}",
            register.rps / sqlite["register"],
        ),
        row(
            "command results on MongoDB: req/s, vs on SQLite",
            f"{rate(results)} ({results.rps / ceiling:.2f} of the ceiling)",
            f"{sqlite['results']:.0f}",
            results.rps / sqlite["results"],
        ),
    ]


@dataclass(frozen=True)
class Ceilings:
    bare: Result
    publishing: Result  # FastAPI + one confirmed publish: what the ratios divide by
    publish_rate: float
    consume_rate: float
    machine: Machine | None  # while bare + publish was measured: a ratio's other half

    def describe(self) -> str:
        return (
            f"ceilings: bare {self.bare.rps:.0f} req/s; bare+publish {self.publishing.rps:.0f} "
            f"req/s (p99 {self.publishing.p99_ms:.1f} ms); raw publish {self.publish_rate:.0f} "
            f"msg/s; raw consume+ack {self.consume_rate:.0f} msg/s; bare+publish's "
            f"{meanwhile(self.machine)}"
        )


async def ceilings(amqp_url: str, seconds: int, raw: int) -> Ceilings:
    bare, _ = ceiling_http("bare", amqp_url, seconds)
    publishing, machine = ceiling_http("publishing", amqp_url, seconds)
    return Ceilings(
        bare=bare,
        publishing=publishing,
        publish_rate=await raw_publish(amqp_url, raw, "bench.raw"),
        consume_rate=await raw_consume(amqp_url, raw, "bench.raw"),
        machine=machine,
    )


async def register_rows(
    system: System, amqp_url: str, ceiling: Result, seconds: int
) -> tuple[list[str], Result]:
    """Register at 64 connections, its tail at half rate, signed by the SDK, memory."""
    url = system.gateway_url
    bodies = register_bodies(5000, f"reg-{uuid.uuid4().hex[:4]}")
    with CpuShare(groups(system)) as cpu, MachineProbe() as probe:
        register = wrk(url, "/v3/sources", bodies, token(), seconds=seconds)
    await drained(amqp_url)
    registry_after_first = rss_mb(system, "registry")
    half = await at_half_rate(
        url, [("/v3/sources", b) for b in bodies], register.rps, seconds, processes=groups(system)
    )
    await drained(amqp_url)
    fresh = register_bodies(5000, f"sig-{uuid.uuid4().hex[:4]}")  # not yet stored
    signed = wrk(
        url,
        "/v3/sources",
        signing.signed_requests(url, [("/v3/sources", body) for body in fresh]),
        {},
        seconds=seconds,
    )
    await drained(amqp_url)
    verify_us, floor_us = signing.verify_cost_us(bodies[0])
    lines = [
        row(
            "register: req/s at 64 connections",
            rate(register),
            f"{ceiling.rps:.0f}",
            register.rps / ceiling.rps,
        ),
        row(
            "register: p50 / p99 at 64 connections (ms)",
            f"{register.p50_ms:.1f} / {register.p99_ms:.1f}",
            f"{ceiling.p50_ms:.1f} / {ceiling.p99_ms:.1f}",
            None,
        ),
        row(
            "register: CPU cores in use", f"{cpu.describe()}; {meanwhile(probe.machine)}", "", None
        ),
        row(
            f"register: p99 at half that rate, {half.rate:.0f} req/s, three runs (ms)",
            half.describe(),
            "target ≤ 25",
            None,
        ),
        cost_row("register", half, cpu, register.rps * seconds),
        row(
            "register signed by the SDK (access key): req/s, vs with a token",
            rate(signed),
            f"{register.rps:.0f}",
            signed.rps / register.rps,
        ),
        row(
            "RSS of the registry after a second register run, vs after the first (MB)",
            f"{rss_mb(system, 'registry'):.0f}",
            f"{registry_after_first:.0f}",
            rss_mb(system, "registry") / registry_after_first,
        ),
        row(
            "signature check of one register request (µs), vs bare SHA-256 + HMAC",
            f"{verify_us:.0f}",
            f"{floor_us:.0f}",
            verify_us / floor_us,
        ),
    ]
    return lines, register


@dataclass(frozen=True)
class ResultRun:
    lines: list[str]
    results: Result
    half: Tail
    servers: list[str]
    task_ids: list[str]


async def result_rows(
    system: System, amqp_url: str, ceiling: Result, seconds: int, servers: int
) -> ResultRun:
    """Command results at 64 connections over `servers` started servers, and the tail."""
    url = system.gateway_url
    server_ids, task_ids = await started_servers(url, servers)
    requests = result_requests(server_ids)
    with CpuShare(groups(system)) as cpu, MachineProbe() as probe:
        results = wrk(url, "/", requests, token(), seconds=seconds)
    await drained(amqp_url)
    half = await at_half_rate(url, requests, results.rps, seconds, processes=groups(system))
    await drained(amqp_url)
    # The same runs with command-result stopped: the answer's path alone (the registry
    # answers a result; command-result records it afterwards, on the same two cores).
    with paused(system, "command-result"):
        alone = await at_half_rate(url, requests, results.rps, seconds)
    await drained(amqp_url)
    # The half-rate runs replay the list (its STARTs and SYNCs now refused facts): its CPU
    # is set beside a saturated replay's, the same work, not beside the first pass's.
    with CpuShare(groups(system)) as replayed_cpu:
        replayed = wrk(url, "/", requests, token(), seconds=seconds)
    await drained(amqp_url)
    lines = [
        row(
            "command results: req/s at 64 connections",
            rate(results),
            f"{ceiling.rps:.0f}",
            results.rps / ceiling.rps,
        ),
        row(
            "command results: p50 / p99 (ms)",
            f"{results.p50_ms:.1f} / {results.p99_ms:.1f}",
            "",
            None,
        ),
        row(
            "command results: CPU cores in use",
            f"{cpu.describe()}; {meanwhile(probe.machine)}",
            "",
            None,
        ),
        row(
            f"command results: p99 at {half.rate:.0f} req/s, three runs (ms)",
            half.describe(),
            "target ≤ 25",
            None,
        ),
        row(
            "command results: p99 at the same rate with command-result stopped, its records "
            "waiting in its queue (the answer's path alone), three runs (ms)",
            alone.describe(),
            "",  # beside the tail above, not a goal of its own
            None,
        ),
        cost_row("command results (replayed)", half, replayed_cpu, replayed.rps * seconds),
    ]
    return ResultRun(lines, results, half, server_ids, task_ids)


async def consumer_rows(amqp_url: str, system: System, preload: int, ceiling: float) -> list[str]:
    consumed = await consumer_throughput(amqp_url, system, preload)
    return [
        row(
            f"registry consumer, {preload} preloaded registers: msg/s",
            f"{consumed:.0f}",
            f"{ceiling:.0f}",
            consumed / ceiling,
        )
    ]


async def sqlite_rows(
    amqp_url: str, limits: Ceilings, quick: bool
) -> tuple[list[str], dict[str, float]]:
    """Every row measured on the embedded default system (SQLite), and the throughputs the
    MongoDB rows compare with."""
    seconds = 5 if quick else 15
    with tempfile.TemporaryDirectory() as tmp:
        system = start_system(amqp_url, Path(tmp))
        try:
            lines = await record_rows(system, amqp_url, quick)
            await drained(amqp_url)
            more, register = await register_rows(system, amqp_url, limits.publishing, seconds)
            lines += more
            await drained(amqp_url)
            run = await result_rows(
                system, amqp_url, limits.publishing, seconds, 200 if quick else 1000
            )
            lines += run.lines
            await drained(amqp_url)
            lines += await progress_rows(
                system.gateway_url,
                amqp_url,
                run.servers,
                run.task_ids,
                limits.publishing.rps,
                run.half.rate,
                seconds,
            )
            await drained(amqp_url)
            lines += await consumer_rows(
                amqp_url, system, 2_000 if quick else 50_000, limits.consume_rate
            )
            lines += await scripts(system, amqp_url, hosts=20 if quick else 200)
            for name, mb in peak_rss_mb(system).items():
                lines.append(row(f"peak RSS of {name} (MB)", f"{mb:.0f}", "", None))
        finally:
            system.stop_all()
    return lines, {"register": register.rps, "results": run.results.rps}


async def record_rows(system: System, amqp_url: str, quick: bool) -> list[str]:
    """Command-result alone, fed records straight to its queue (bench/records.py): its CPU
    per result in messages of 10, 3 and 1, the sizes of a bulk at saturation, at half rate,
    and at low load."""
    rate, sizes = 480, [10, 3, 1]
    with MachineProbe() as probe:  # a core at its slow speed spends 1.7 times the CPU
        costs = await record_costs(system, amqp_url, rate, sizes, seconds=5 if quick else 10)
    shown = " / ".join(f"{c.us_per_result:,.0f}" for c in costs)
    shown += f"; {meanwhile(probe.machine)}"
    return [
        row(
            f"command-result alone, {rate} records/s in messages of "
            f"{' / '.join(map(str, sizes))}: µs of its CPU per result",
            shown,
            "",
            costs[-1].us_per_result / costs[0].us_per_result,
        )
    ]


async def results_alone(amqp_url: str, limits: Ceilings, quick: bool) -> list[str]:
    """The command-result rows on a system of their own: `--only results`, to measure a
    change to the results' chain without the half hour of everything else."""
    with tempfile.TemporaryDirectory() as tmp:
        system = start_system(amqp_url, Path(tmp))
        try:
            lines = await record_rows(system, amqp_url, quick)
            await drained(amqp_url)
            run = await result_rows(
                system, amqp_url, limits.publishing, 5 if quick else 15, 200 if quick else 1000
            )
        finally:
            system.stop_all()
    return lines + run.lines


def signed_polls(url: str, servers: list[str], seconds: int) -> tuple[Result, Result]:
    """Polls of these servers at 64 connections, with a token and signed by the SDK."""
    polls = [(f"/v3/sources/{server_id}/command", "") for server_id in servers]
    by_token = wrk(url, "/", polls, token(), seconds=seconds, method="GET")
    signed = signing.signed_requests(url, polls, method="GET")
    return by_token, wrk(url, "/", signed, {}, seconds=seconds, method="GET")


async def fleet_rows(amqp_url: str, quick: bool) -> list[str]:
    """The largest fleet of polling agents that holds (bench/fleet.py), and how stale a
    poll may be (bench/freshness.py), on a system of their own."""
    steps = [4_000, 10_000] if quick else [6_000, 10_000, 14_000, 18_000, 22_000, 26_000]
    with tempfile.TemporaryDirectory() as tmp:
        system = start_system(amqp_url, Path(tmp))
        try:
            await drained(amqp_url)
            url, bearer = system.gateway_url, token()["X-Auth-Token"]
            agents = with_token(bearer)
            servers = await registered(
                amqp_url, small_bodies(steps[-1], f"fl-{uuid.uuid4().hex[:4]}")
            )
            async with httpx.AsyncClient(base_url=url, headers=token(), timeout=60) as http:
                tasks = await start_tasks(http, servers[: steps[-1] // 10], concurrency=16)
            await drained(amqp_url)
            by_token, by_key = signed_polls(url, servers[:1000], seconds=5 if quick else 10)
            with CpuShare(groups(system)) as cpu, MachineProbe() as probe:
                best, runs = await largest_fleet(url, agents, servers, tasks, steps)
            largest_n = best.agents if best else steps[0]
            half = largest_n // 2
            tails, machines = await probed(
                lambda: run_fleet(url, agents, servers[:half], tasks[: half // 10]),
                1 if quick else 3,
            )
            # The same fleet as the SMS agents authenticate: every request signed.
            sdk = await run_fleet(
                url, signing.signer(url), servers[:largest_n], tasks[: largest_n // 10]
            )
            fresh = servers[steps[-1] // 10 :][:50]  # polled by the fleet, without tasks
            freshness = await measure_freshness(url, bearer, fresh)
        finally:
            system.stop_all()
    handed, stale, recorded = freshness.describe()
    largest = f"**{best.agents}**" if best else "none"
    tail = Tail(
        rate=statistics.median(t.polls_per_s for t in tails),
        p99s=[t.p99_ms for t in tails],
        machines=machines,
    )
    return [
        row(
            "polls signed by the SDK (access key, as SMS agents send them), vs with a token: "
            "req/s at 64 connections",
            rate(by_key),
            f"{by_token.rps:.0f}",
            by_key.rps / by_token.rps,
        ),
        row(
            "largest fleet polling every 5 s (10 % also reporting progress every 10 s) with "
            "p99 ≤ 100 ms and no errors: agents",
            largest,
            "target ≥ 10,000",
            None,
        ),
        *(row(f"fleet of {r.agents}", r.describe().split(": ", 1)[1], "", None) for r in runs),
        row(
            f"fleet of {sdk.agents} signing every request with an access key (as SMS agents do)",
            sdk.describe().split(": ", 1)[1],
            "",
            None,
        ),
        row("CPU cores in use over the fleet runs", cpu.describe(), "", None),
        row(
            "the machine over the fleet runs (each progress report waits for two syncs)",
            probe.machine.describe() if probe.machine else "not measured",
            "",
            None,
        ),
        row(
            f"polls at half that fleet ({half} agents, {tail.rate:.0f} polls/s): p99 (ms)",
            tail.describe(),
            "target ≤ 25",
            None,
        ),
        row(
            "a queued command handed out to the agent after its task's start (ms)", handed, "", None
        ),
        row("polls still handed the command after its result was answered 200", stale, "", None),
        row("a result listed in its server's history after its 200 (ms)", recorded, "", None),
    ]


async def parts(
    amqp_url: str, limits: Ceilings, quick: bool, only: str | None
) -> AsyncIterator[list[str]]:
    """The table's rows, a part at a time as each is measured: a part that fails later
    (a missing tool, a crashed system) does not take the figures already taken with it."""
    if only == "results":
        yield await results_alone(amqp_url, limits, quick)
        return
    if only == "fleet":
        yield await fleet_rows(amqp_url, quick)
        return
    lines, sqlite = await sqlite_rows(amqp_url, limits, quick)
    yield lines
    yield await fleet_rows(amqp_url, quick)
    seconds = 5 if quick else 15
    yield await mongodb_rows(amqp_url, limits.publishing.rps, sqlite, seconds, quick)
    if quick:  # four more systems to start: the full run's part
        yield [row("scaling over gateway workers and registry replicas", "`make bench`", "", None)]
    else:
        yield await scaling_shape(amqp_url, 10)


async def main(quick: bool, only: str | None) -> None:
    try:
        await measure(quick, only)
    except Exception:
        # A part that failed may leave an aio-pika robust connection behind, reconnecting to
        # the vhost just deleted; its reconnect loop swallows a cancellation that lands in a
        # connection attempt (mosquito/aio-pika#414), so asyncio.run could wait on it for
        # ever and never show why. Every process the part started is stopped by now.
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)


async def measure(quick: bool, only: str | None) -> None:
    seconds = 5 if quick else 15
    broker.ensure_running()
    vhost = broker.create_vhost()
    amqp_url = broker.amqp_url(vhost)
    try:
        limits = await ceilings(amqp_url, seconds, raw=10_000 if quick else 50_000)
        print(limits.describe(), flush=True)
        print("| measure | Rehost | ceiling | ratio |\n|---|---|---|---|", flush=True)
        async for lines in parts(amqp_url, limits, quick, only):
            print("\n".join(lines), flush=True)
    finally:
        if vhost:
            broker.delete_vhost(vhost)


if __name__ == "__main__":
    # Stopped from outside (a timeout, Ctrl-C), it still stops the processes it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about six minutes: shorter runs, fewer messages, no scaling rows",
    )
    parser.add_argument(
        "--only",
        choices=["results", "fleet"],
        help=(
            "the ceilings and one part alone: results, the command-result rows; fleet, the "
            "polling fleet and how stale a poll may be"
        ),
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.quick, arguments.only))

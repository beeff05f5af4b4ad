"""`rehost run` (the README's run command) keeps the system up when a process crashes.

The whole system runs under `rehost run` on a vhost and data directory of its own. Under
register and command-result load, every service is killed -9 in turn: the supervisor
starts each one again and the others keep serving; every call answered 200 is stored
once, and the gateway never refuses a connection. SIGTERM then stops everything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import auth
from tests.e2e.helpers import eventually, eventually_or, ok, server_body
from tests.e2e.test_faults import Load, all_stored
from tests.support import broker
from tests.support.processes import free_port

SERVICES = ("registry", "command-result", "task-lock", "script-executor")
HEALTH_VARS = {
    "registry": "REHOST_REGISTRY_HEALTH_PORT",
    "command-result": "REHOST_COMMAND_RESULT_HEALTH_PORT",
    "task-lock": "REHOST_TASK_LOCK_HEALTH_PORT",
    "script-executor": "REHOST_SCRIPT_EXECUTOR_HEALTH_PORT",
}


@dataclass
class Run:
    popen: subprocess.Popen[bytes]
    gateway_url: str
    health: dict[str, str]  # service -> readyz URL
    log: Path

    def child_pid(self, service: str) -> int | None:
        """The pid of the process running `service`, a child of the supervisor."""
        out = subprocess.run(
            ["ps", "-o", "pid=,args=", "--ppid", str(self.popen.pid)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for line in out.splitlines():
            pid, _, args = line.strip().partition(" ")
            if args.endswith(f"services.cli {service}"):
                return int(pid)
        return None


@pytest.fixture(scope="module")
def vhost_url() -> Iterator[str]:
    vhost = broker.create_vhost()
    if vhost is None:
        pytest.skip("no rabbitmqctl to make a vhost of its own")
    yield broker.amqp_url(vhost)
    broker.delete_vhost(vhost)


@pytest.fixture(scope="module")
async def run(
    vhost_url: str, base_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Run]:
    work = tmp_path_factory.mktemp("run")
    port = free_port()
    env = {
        **base_env,
        "REHOST_AMQP_URL": vhost_url,
        "REHOST_DATA_DIR": str(work / "var"),
        "REHOST_GATEWAY_PORT": str(port),
        "OTEL_TRACES_EXPORTER": "none",
    }
    health = {}
    for service, var in HEALTH_VARS.items():
        env[var] = str(free_port())
        health[service] = f"http://127.0.0.1:{env[var]}/readyz"
    log = work / "run.log"
    popen = _start(env, log)
    started = Run(popen, f"http://127.0.0.1:{port}", health, log)
    try:
        for url in [*health.values(), f"{started.gateway_url}/readyz"]:
            await eventually(lambda url=url: _ready(url), timeout=60)  # type: ignore[misc]
        yield started
    finally:
        if popen.poll() is None:  # the test failed half-way: its children die with it
            os.killpg(popen.pid, signal.SIGKILL)
            popen.wait(10)


def _start(
    env: dict[str, str], log: Path, only: list[str] | None = None
) -> subprocess.Popen[bytes]:
    """`rehost run`, in a session of its own (so what it leaves behind can be found)."""
    only_args = [arg for name in only or [] for arg in ("--only", name)]
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", *only_args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def _children(pid: int) -> list[int]:
    out = await asyncio.to_thread(
        subprocess.run, ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def _session_members(session: int) -> str:
    return subprocess.run(
        ["pgrep", "-s", str(session)], capture_output=True, text=True, check=False
    ).stdout


async def _ready(url: str) -> bool:
    async with httpx.AsyncClient(timeout=1) as http:
        try:
            return (await http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False


class ResultLoad:
    """Reports UPLOAD_LOG results for a few servers, each marked, and keeps the marks of
    those answered 200."""

    def __init__(self, client: httpx.AsyncClient, domain: str, servers: list[str]) -> None:
        self.client = client
        self.domain = domain
        self.servers = servers
        self.answered: dict[str, list[str]] = {s: [] for s in servers}
        self.bad: list[str] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            for server_id in self.servers:
                mark = uuid.uuid4().hex
                body = {
                    "command_name": "UPLOAD_LOG",
                    "result": "success",
                    "result_detail": {"mark": mark},
                }
                url = f"/v3/sources/{server_id}/command_result"
                try:
                    response = await self.client.post(url, json=body, headers=auth(self.domain))
                except httpx.TransportError as exc:
                    self.bad.append(repr(exc))
                    continue
                if response.status_code == 200:
                    self.answered[server_id].append(mark)
                elif response.status_code != 503:
                    self.bad.append(response.text)

    def stop(self) -> None:
        self._stop.set()


async def history_marks(client: httpx.AsyncClient, domain: str, server_id: str) -> list[str]:
    marks: list[str] = []
    while True:
        page = await ok(
            client.get(
                f"/v3/sources/{server_id}/command_results",
                params={"limit": 100, "offset": len(marks)},
                headers=auth(domain),
            )
        )
        items = page["command_results"]
        marks += [item["result_detail"].get("mark") for item in items]
        if len(items) < 100:
            return marks


async def recorded_marks(
    client: httpx.AsyncClient, domain: str, server_id: str, answered: list[str]
) -> list[str]:
    """The server's stored marks once every answered one is there (a result is recorded a
    hop after its 200), or as they are after 30 s, for the assertion to say what is missing."""

    async def stored() -> list[str]:
        return await history_marks(client, domain, server_id)

    async def all_there() -> list[str] | None:
        marks = await stored()
        return marks if set(answered) <= set(marks) else None

    result: list[str] = await eventually_or(all_there, stored)
    return result


async def test_killing_each_service_under_rehost_run_loses_nothing_and_it_comes_back(
    run: Run,
) -> None:
    domain = f"run-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=run.gateway_url, timeout=30) as client:
        servers = [
            (await ok(client.post("/v3/sources", json=server_body(), headers=auth(domain))))["id"]
            for _ in range(4)
        ]
        registers = Load(client, domain)
        results = ResultLoad(client, domain, servers)
        loads = asyncio.gather(registers.run(workers=4), results.run())
        try:
            for service in SERVICES:
                await asyncio.sleep(1.5)
                pid = run.child_pid(service)
                assert pid is not None, service
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()

                async def restarted(service: str = service, pid: int = pid) -> bool:
                    now = run.child_pid(service)
                    return now not in (None, pid) and await _ready(run.health[service])

                await eventually(restarted, timeout=30)
                assert time.monotonic() - killed_at < 30
            await asyncio.sleep(1.5)
        finally:
            registers.stop()
            results.stop()
            await loads
        assert not registers.bad and not results.bad, (registers.bad[:3], results.bad[:3])
        assert len(registers.acknowledged) > 20
        assert sum(len(marks) for marks in results.answered.values()) > 20
        await all_stored(client, domain, registers.acknowledged)
        for server_id, answered in results.answered.items():
            stored = await recorded_marks(client, domain, server_id, answered)
            assert all(stored.count(mark) == 1 for mark in answered), server_id
    log = run.log.read_text(errors="replace")
    assert log.count("process.exited") == len(SERVICES), log[-3000:]

    run.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(run.popen.wait, 30) == 0
    leftover = _session_members(run.popen.pid)
    assert not leftover.strip(), leftover


async def test_no_process_outlives_a_supervisor_killed_by_sigkill(
    vhost_url: str, base_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**base_env, "REHOST_AMQP_URL": vhost_url, "REHOST_DATA_DIR": str(tmp_path)}
    popen = _start(
        {**env, "REHOST_GATEWAY_PORT": str(free_port())}, tmp_path / "run.log", ["registry"]
    )
    try:
        children = await eventually(lambda: _children(popen.pid), timeout=20)
    finally:
        os.kill(popen.pid, signal.SIGKILL)
        await asyncio.to_thread(popen.wait, 10)

    async def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in children)

    await eventually(gone, timeout=20)

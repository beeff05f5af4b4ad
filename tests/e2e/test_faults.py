"""Faults over the real broker: the broker stops, the store locks, services die (issue: faults).

Each test starts from the running system and leaves it running.
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pymongo
import pytest

from tests.conftest import auth
from tests.e2e.helpers import eventually, ok, server_body, task_body
from tests.e2e.test_events_and_commands import request_over_amqp
from tests.e2e.test_polls import command_is, started
from tests.support import broker
from tests.support.integrator import event_tap
from tests.support.processes import System

REPLY_TIMEOUT = 3.0  # REHOST_REPLY_TIMEOUT in the test system


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)


class Load:
    """Registers servers from a few concurrent clients and keeps what each answer said."""

    def __init__(self, client: httpx.AsyncClient, domain: str) -> None:
        self.client = client
        self.domain = domain
        self.acknowledged: dict[str, str] = {}  # hostname -> id, for every 200
        self.statuses: list[int] = []
        self.answered_at: list[float] = []  # monotonic, one for each status
        self.sent_at: list[float] = []  # monotonic, one for each status
        self.bad: list[str] = []
        self._stop = asyncio.Event()

    async def _worker(self) -> None:
        while not self._stop.is_set():
            body = server_body(f"load-{uuid.uuid4().hex[:10]}")
            started = time.monotonic()
            try:
                response = await self.client.post(
                    "/v3/sources", json=body, headers=auth(self.domain)
                )
            except httpx.TransportError as exc:
                self._record(0, started)
                self.bad.append(repr(exc))
                await asyncio.sleep(0.1)
                continue
            self._record(response.status_code, started)
            if response.status_code not in (200, 503):
                self.bad.append(response.text)
            if response.status_code == 200:
                self.acknowledged[body["hostname"]] = response.json()["id"]
            elif response.status_code == 503:
                assert response.json()["error_code"] in ("SMS.9503", "SMS.9504")
                await asyncio.sleep(0.1)

    async def run(self, workers: int = 8) -> None:
        await asyncio.gather(*(self._worker() for _ in range(workers)))

    def stop(self) -> None:
        self._stop.set()

    def _record(self, status: int, sent_at: float) -> None:
        self.statuses.append(status)
        self.answered_at.append(time.monotonic())
        self.sent_at.append(sent_at)

    @property
    def slowest(self) -> float:
        """The longest wait for an answer (a transport error is not one)."""
        answers = zip(self.statuses, self.sent_at, self.answered_at, strict=True)
        return max((answered - sent for status, sent, answered in answers if status), default=0.0)

    def told_between(self, start: float, end: float) -> list[int]:
        """The statuses of the requests both sent and answered in [start, end)."""
        answers = zip(self.statuses, self.sent_at, self.answered_at, strict=True)
        return [status for status, sent, answered in answers if start <= sent and answered < end]


async def all_stored(client: httpx.AsyncClient, domain: str, expected: dict[str, str]) -> None:
    found: dict[str, str] = {}
    offset = 0
    while True:
        page = await ok(
            client.get("/v3/sources", params={"limit": 100, "offset": offset}, headers=auth(domain))
        )
        found.update({s["hostname"]: s["id"] for s in page["source_servers"]})
        offset += 100
        if offset >= page["count"]:
            break
    assert {h: found.get(h) for h in expected} == expected  # every acknowledged one, once


async def test_a_broker_outage_answers_503_quickly_and_loses_nothing(
    client: httpx.AsyncClient, system: System, amqp_url: str
) -> None:
    polled, _ = await started(client)  # its START is in the gateway's read model
    domain = f"outage-{uuid.uuid4().hex[:6]}"
    load = Load(client, domain)
    running = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(2)
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        # A register sent before the broker stopped may be confirmed and answered 200 after
        # stop_app returns; only what was sent and answered while it was down must be refused.
        stopped = time.monotonic()
        await asyncio.sleep(10)
        restarting = time.monotonic()
        await asyncio.to_thread(rabbitmqctl, "start_app")
        back = time.monotonic()

        async def serving() -> bool:
            response = await client.post("/v3/sources", json=server_body(), headers=auth(domain))
            return response.status_code == 200

        await eventually(serving, timeout=30)
        recovered_in = time.monotonic() - back
        await asyncio.sleep(3)
    finally:
        load.stop()
        await running
    during = load.told_between(stopped, restarting)
    assert during and set(during) <= {503}, sorted(set(during))
    assert not load.bad, load.bad[:3]
    assert load.slowest < REPLY_TIMEOUT + 2, load.slowest
    assert recovered_in < 20
    for process in system.processes.values():
        process.wait_ready(30)
    await all_stored(client, domain, load.acknowledged)
    assert len(load.acknowledged) > 20
    # The gateway's event queue outlived the outage and is consumed again: a result told
    # only by its event reaches the agent's next polls.
    body = {"server_id": polled, "command_name": "START", "result": "success"}
    await request_over_amqp(
        amqp_url,
        "sms.source.report_result",
        json.dumps({**body, "result_detail": {"msg": "ok"}}).encode(),
        "domain-a",
    )
    await eventually(lambda: command_is(client, polled, ""), timeout=5)


@pytest.mark.sqlite_only  # an exclusive SQLite lock; MongoDB's outage is the broker test's kind
async def test_a_locked_store_holds_messages_until_it_is_free(
    client: httpx.AsyncClient, system: System, base_env: dict[str, str]
) -> None:
    db = Path(base_env["REHOST_DATA_DIR"]) / "registry.db"
    ready = system["registry"].ready_url
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the store is locked: nothing can write
    body = server_body()
    try:
        pending = asyncio.create_task(client.post("/v3/sources", json=body, headers=auth()))
        response = await pending
        assert response.status_code == 503  # no reply within the timeout: held, not failed

        async def unready() -> bool:
            return (await client.get(ready)).status_code == 503

        await eventually(unready, timeout=20)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    async def ready_again() -> bool:
        return (await client.get(ready)).status_code == 200

    await eventually(ready_again, timeout=30)

    async def applied() -> bool:
        listed = await ok(client.get("/v3/sources", params={"name": body["name"]}, headers=auth()))
        return bool(listed["count"] == 1)

    await eventually(applied, timeout=30)  # the held message was applied once the lock went


async def crash_run(
    client: httpx.AsyncClient, system: System, amqp_url: str, base_env: dict[str, str], calls: int
) -> dict[str, int]:
    """`calls` register and command-result calls while every service is killed -9 once."""
    domain = f"crash-{uuid.uuid4().hex[:6]}"
    started_servers = []
    for _ in range(20):
        server_id = (
            await ok(client.post("/v3/sources", json=server_body(), headers=auth(domain)))
        )["id"]
        task = task_body(server_id)
        task_id = (await ok(client.post("/v3/tasks", json=task, headers=auth(domain))))["id"]
        await ok(
            client.post(
                f"/v3/tasks/{task_id}/action", json={"operation": "start"}, headers=auth(domain)
            )
        )
        started_servers.append(server_id)
    registered: dict[str, str] = {}
    reported: dict[str, int] = {}
    todo = [("register", i) for i in range(calls - len(started_servers))]
    todo += [("report", i) for i in range(len(started_servers))]
    random.shuffle(todo)
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for item in todo:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            kind, i = queue.get_nowait()
            if kind == "register":
                body = server_body(f"crash-{uuid.uuid4().hex[:10]}")
                response = await client.post("/v3/sources", json=body, headers=auth(domain))
                if response.status_code == 200:
                    registered[body["hostname"]] = response.json()["id"]
            else:
                server_id = started_servers[i]
                body = {"command_name": "START", "result": "success", "result_detail": {}}
                response = await client.post(
                    f"/v3/sources/{server_id}/command_result", json=body, headers=auth(domain)
                )
                reported[server_id] = response.status_code
            assert response.status_code in (200, 503), response.text

    async def chaos() -> None:
        for name in random.sample(["registry", "command-result", "task-lock"], 3):
            await asyncio.sleep(random.uniform(0.5, 2.0))
            system[name].kill()
            await asyncio.to_thread(system[name].start)

    async with event_tap(amqp_url, "source.*") as tap:
        await asyncio.gather(chaos(), *(worker() for _ in range(8)))
        for process in system.processes.values():
            process.wait_ready(30)
        await asyncio.sleep(3)
        await tap.settle(2)

    await all_stored(client, domain, registered)
    events = {e.body["event_id"]: e.body for e in tap.received if e.body["domain_id"] == domain}
    for server_id, status in reported.items():
        moves = [
            e
            for e in events.values()
            if e["type"] == "source.state_changed"
            and e["aggregate_id"] == server_id
            and e["data"]["from"] == "initialize"
        ]
        state = (await ok(client.get(f"/v3/sources/{server_id}", headers=auth(domain))))["state"]
        if status == 200:
            assert state == "replicate" and len(moves) == 1, (server_id, state, moves)
        else:
            assert len(moves) <= 1
    registered_events = {
        e["aggregate_id"] for e in events.values() if e["type"] == "source.registered"
    }
    assert set(registered.values()) <= registered_events  # every change published, at least once
    for name in ("registry", "command-result", "task-lock"):
        left = await asyncio.to_thread(unpublished, base_env, name)
        assert not left, f"{name} holds unpublished events: {left}"
    return {
        "calls": calls,
        "acknowledged": len(registered) + sum(s == 200 for s in reported.values()),
    }


def unpublished(base_env: dict[str, str], service: str) -> dict[str, int]:
    """Events still waiting in a service's outboxes, by collection (or table)."""
    if url := base_env.get("REHOST_STORE_URL"):
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
        with client:
            db = client.get_default_database()
            counts = {
                c: db[c].count_documents({"pending": True}) for c in db.list_collection_names()
            }
        return {c: n for c, n in counts.items() if n}
    with sqlite3.connect(Path(base_env["REHOST_DATA_DIR"]) / f"{service}.db") as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        outboxes = [t for t in tables if t.endswith("_outbox")]
        assert outboxes, f"{service} has no outbox table"
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in outboxes}
    return {t: n for t, n in counts.items() if n}


async def test_killing_every_service_once_under_load_loses_nothing(
    client: httpx.AsyncClient, system: System, amqp_url: str, base_env: dict[str, str]
) -> None:
    figures = await crash_run(client, system, amqp_url, base_env, calls=400)
    assert figures["acknowledged"] > 100


@pytest.mark.soak
async def test_soak_killing_every_service_once_under_5000_calls(
    client: httpx.AsyncClient, system: System, amqp_url: str, base_env: dict[str, str]
) -> None:
    figures = await crash_run(client, system, amqp_url, base_env, calls=5000)
    assert figures["acknowledged"] > 1000


async def test_a_gateway_past_its_bound_answers_503_at_once_and_the_queue_holds_the_rest(
    system: System, amqp_url: str
) -> None:
    bounded = system.add(
        "gateway", None, extra={"REHOST_MAX_IN_FLIGHT": "4"}, name="gateway-bounded"
    )
    bounded.start()
    system["task-lock"].stop()
    try:
        url = bounded.ready_url.removesuffix("/readyz")
        async with httpx.AsyncClient(base_url=url, timeout=15) as http:

            async def one() -> tuple[int, str, float]:
                started = time.monotonic()
                response = await http.get("/v3/tasks", headers=auth())
                return (
                    response.status_code,
                    response.json()["error_code"],
                    time.monotonic() - started,
                )

            answers = await asyncio.gather(*(one() for _ in range(20)))
        busy = [a for a in answers if a[1] == "SMS.9504"]
        waited = [a for a in answers if a[1] == "SMS.9503"]
        assert {a[0] for a in answers} == {503}
        assert len(waited) == 4 and len(busy) == 16
        assert all(elapsed < 1.0 for _, _, elapsed in busy)  # refused at once, not piled up
        depth = await _queue_depth(amqp_url, "rehost.task-lock")
        assert depth >= 4  # what was accepted waits in the broker, not in a process
    finally:
        system["task-lock"].start()
        system.discard("gateway-bounded")
    assert await eventually(lambda: _queue_empty(amqp_url, "rehost.task-lock"), timeout=20)


async def _queue_depth(amqp_url: str, queue: str) -> int:
    return (await broker.declared(amqp_url, queue))[0]


async def _queue_empty(amqp_url: str, queue: str) -> bool:
    return await _queue_depth(amqp_url, queue) == 0

"""The executor's report handling over a real store, without a broker: agents' reports
on one execution that arrive together are folded into one change, and none is lost."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Collection
from pathlib import Path
from typing import Any, cast

import pytest

from services.script_executor.agents import AgentRefused
from services.script_executor.handlers import ScriptExecutorHandlers
from services.script_executor.orders import EXECUTIONS
from shared.bus import Requester
from shared.config import Settings
from shared.contracts.scripts import Heartbeat, RunFinished
from shared.envelope import Incoming
from shared.store import open_store

DOMAIN = "d1"
AGENTS = ["a0", "a1", "a2"]


def incoming(
    routing_key: str, body: str, domain_id: str = DOMAIN, user_id: str | None = None
) -> Incoming:
    return Incoming(
        routing_key=routing_key,
        message_id=uuid.uuid4().hex,
        body=body.encode(),
        domain_id=domain_id,
        actor=None,
        schema_version=1,
        reply_to=None,
        correlation_id=None,
        delivery_count=0,
        user_id=user_id,
    )


def finished(run_id: str, agent_sn: str) -> str:
    return RunFinished(
        run_id=run_id,
        agent_sn=agent_sn,
        status="SUCCESS",
        exit_code=0,
        duration_ms=1,
        stdout=f"out of {agent_sn}",
        stderr="",
    ).model_dump_json()


@pytest.fixture
async def handlers(tmp_path: Path) -> AsyncIterator[ScriptExecutorHandlers]:
    store = open_store(f"sqlite:///{tmp_path / 'executor.db'}")
    await store.open()
    # Reports never ask other services anything: no requester is needed.
    settings = Settings(agent_trust_on_first_use=True)
    yield ScriptExecutorHandlers(store, cast(Requester, None), settings)
    await store.close()


async def heartbeat(handlers: ScriptExecutorHandlers, agent_sn: str) -> None:
    beat = Heartbeat(agent_sn=agent_sn, hostname=agent_sn, running=0, at="now")
    await handlers.reports.heartbeat(
        incoming(f"agent.{agent_sn}.heartbeat", beat.model_dump_json())
    )


async def running_execution(
    handlers: ScriptExecutorHandlers, batches: list[list[str]] | None = None
) -> dict[str, Any]:
    """Batches over AGENTS (one by default), all online: the first batch's runs are out,
    its hosts PROCESSING."""
    for sn in AGENTS:
        await heartbeat(handlers, sn)
    script = '{"name": "s", "type": "SHELL", "content": "true"}'
    created = await handlers.library.create_script(incoming("coc.script.create", script))
    command = {
        "script_uuid": created.body["data"],
        "execute_param": {"timeout": 30, "success_rate": "100.0", "execute_user": "root"},
        "execute_batches": [
            {
                "batch_index": index,
                "rotation_strategy": "CONTINUE",
                "target_instances": [
                    {"resource_id": sn, "agent_sn": sn, "project_id": "p", "region_id": "r"}
                    for sn in agents
                ],
            }
            for index, agents in enumerate(batches or [AGENTS], start=1)
        ],
    }
    reply = await handlers.orders.execute(incoming("coc.script.execute", json.dumps(command)))
    doc = await handlers.store.get(EXECUTIONS, reply.body["data"])
    assert doc is not None
    return doc.data


def hosts(data: dict[str, Any]) -> list[dict[str, Any]]:
    return data["batches"][0]["hosts"]


async def test_a_redelivered_report_folded_with_new_ones_does_not_swallow_them(
    handlers: ScriptExecutorHandlers,
) -> None:
    data = await running_execution(handlers)
    runs = {h["agent_sn"]: h["run_id"] for h in hosts(data)}
    first = incoming("agent.a0.finished", finished(runs["a0"], "a0"))
    await handlers.reports.run_finished(first)
    # a1's report holds the execution's turn; behind it, a0's report comes again (a
    # redelivery) and a2's for the first time: those two are applied as one change.
    await asyncio.gather(
        handlers.reports.run_finished(incoming("agent.a1.finished", finished(runs["a1"], "a1"))),
        handlers.reports.run_finished(first),
        handlers.reports.run_finished(incoming("agent.a2.finished", finished(runs["a2"], "a2"))),
    )
    doc = await handlers.store.get(EXECUTIONS, data["execute_uuid"])
    assert doc is not None
    assert [h["status"] for h in hosts(doc.data)] == ["SUCCESS"] * 3
    assert doc.data["status"] == "FINISHED"
    outputs = await handlers.store.get_many("outputs", list(runs.values()))
    assert {o.data["stdout"] for o in outputs.values()} == {f"out of {sn}" for sn in AGENTS}


@pytest.mark.parametrize(
    ("routing_key", "body_sn"),
    [
        ("agent.a1.finished", "a1"),  # another agent of the execution, its own name
        ("agent.a1.finished", "a0"),  # another agent, the victim's name in the body
        ("agent.stranger.finished", "stranger"),  # an agent of another tenant
    ],
)
async def test_a_report_on_a_run_sent_to_another_agent_is_refused_and_changes_nothing(
    handlers: ScriptExecutorHandlers, routing_key: str, body_sn: str
) -> None:
    data = await running_execution(handlers)
    beat = Heartbeat(agent_sn="stranger", hostname="x", running=0, at="now")
    await handlers.reports.heartbeat(
        incoming("agent.stranger.heartbeat", beat.model_dump_json(), "other")
    )
    run_id = hosts(data)[0]["run_id"]  # dispatched to a0
    with pytest.raises(AgentRefused):
        await handlers.reports.run_finished(incoming(routing_key, finished(run_id, body_sn)))
    doc = await handlers.store.get(EXECUTIONS, data["execute_uuid"])
    assert doc is not None and hosts(doc.data)[0]["status"] == "PROCESSING"
    assert await handlers.store.get("outputs", run_id) is None


async def test_a_heartbeat_handled_while_liveness_is_read_does_not_fail_the_report(
    handlers: ScriptExecutorHandlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = await running_execution(handlers, [["a0"], ["a1", "a2"]])
    # a2's heartbeat is cached and fresh, a1's must be read; while it is, a2's next
    # heartbeat is handled and drops a2 from the cache.
    handlers.liveness.seen("a1")
    read = handlers.store.get_many

    async def read_while_a2_beats(collection: str, doc_ids: Collection[str]) -> Any:
        await heartbeat(handlers, "a2")
        return await read(collection, doc_ids)

    monkeypatch.setattr(handlers.store, "get_many", read_while_a2_beats)
    run_id = hosts(data)[0]["run_id"]
    await handlers.reports.run_finished(incoming("agent.a0.finished", finished(run_id, "a0")))
    doc = await handlers.store.get(EXECUTIONS, data["execute_uuid"])
    assert doc is not None
    assert [h["status"] for h in doc.data["batches"][1]["hosts"]] == ["PROCESSING"] * 2

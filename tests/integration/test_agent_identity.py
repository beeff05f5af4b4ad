"""Who an agent is, over a real store without a broker: the executor's handlers take an
agent's identity from what the broker vouches for (routing key, user_id) and its tenant
and VM from the binding kept here, never from what a heartbeat says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from services.script_executor.agents import AGENTS_COLLECTION, AgentRefused
from services.script_executor.handlers import ScriptExecutorHandlers
from shared.bus import Requester
from shared.config import Settings
from shared.contracts.scripts import AgentBinding, Heartbeat
from tests.integration.test_executor_reports import incoming


async def open_handlers(tmp_path: Path, first_use: bool) -> ScriptExecutorHandlers:
    from shared.store import open_store

    store = open_store(f"sqlite:///{tmp_path / f'agents-{first_use}.db'}")
    await store.open()
    settings = Settings(agent_trust_on_first_use=first_use)
    return ScriptExecutorHandlers(store, cast(Requester, None), settings)


@pytest.fixture
async def handlers(tmp_path: Path) -> AsyncIterator[ScriptExecutorHandlers]:
    """Trust on first use, as the test fleets run."""
    handlers = await open_handlers(tmp_path, first_use=True)
    yield handlers
    await handlers.store.close()


@pytest.fixture
async def strict(tmp_path: Path) -> AsyncIterator[ScriptExecutorHandlers]:
    """Only an operator binds agents (the default)."""
    handlers = await open_handlers(tmp_path, first_use=False)
    yield handlers
    await handlers.store.close()


async def beat(
    handlers: ScriptExecutorHandlers,
    key_sn: str,
    body_sn: str | None = None,
    *,
    domain: str = "d1",
    user: str | None = None,
    vm_uuid: str | None = None,
) -> None:
    body = Heartbeat(agent_sn=body_sn or key_sn, vm_uuid=vm_uuid, hostname="h", running=0, at="t")
    message = incoming(f"agent.{key_sn}.heartbeat", body.model_dump_json(), domain, user)
    await handlers.reports.heartbeat(message)


async def binding(handlers: ScriptExecutorHandlers, agent_sn: str) -> tuple[str, str | None]:
    doc = await handlers.store.get(AGENTS_COLLECTION, agent_sn)
    assert doc is not None
    return doc.domain_id, doc.data.get("vm_uuid")


async def test_a_heartbeat_never_moves_an_agent_to_another_tenant(
    handlers: ScriptExecutorHandlers,
) -> None:
    await beat(handlers, "web-01", domain="d1")
    await beat(handlers, "web-01", domain="d2")
    assert await binding(handlers, "web-01") == ("d1", None)
    assert handlers.liveness.alive(await handlers.store.get(AGENTS_COLLECTION, "web-01"), "d1")


async def test_a_heartbeat_naming_another_agent_is_refused(
    handlers: ScriptExecutorHandlers,
) -> None:
    await beat(handlers, "db-01", domain="d1", vm_uuid="vm-db")
    before = await handlers.store.get(AGENTS_COLLECTION, "db-01")
    with pytest.raises(AgentRefused, match="sn_mismatch"):
        await beat(handlers, "web-01", "db-01", domain="d2", vm_uuid="vm-evil")
    assert await handlers.store.get(AGENTS_COLLECTION, "db-01") == before
    assert await handlers.store.get(AGENTS_COLLECTION, "web-01") is None


async def test_the_first_heartbeat_binds_the_account_and_another_account_is_refused(
    handlers: ScriptExecutorHandlers,
) -> None:
    await beat(handlers, "web-01", user="agent-web-01")
    with pytest.raises(AgentRefused, match="wrong_account"):
        await beat(handlers, "web-01", user="agent-db-01")
    with pytest.raises(AgentRefused, match="wrong_account"):
        await beat(handlers, "web-01", user=None)


async def test_a_vm_another_agent_serves_cannot_be_claimed(
    handlers: ScriptExecutorHandlers,
) -> None:
    await beat(handlers, "db-01", vm_uuid="vm-db")
    with pytest.raises(AgentRefused, match="vm_mismatch"):
        await beat(handlers, "web-01", vm_uuid="vm-db")
    await beat(handlers, "web-02")
    with pytest.raises(AgentRefused, match="vm_mismatch"):
        await beat(handlers, "web-02", vm_uuid="vm-db")  # a bound agent names a VM later
    assert await binding(handlers, "db-01") == ("d1", "vm-db")
    assert await binding(handlers, "web-02") == ("d1", None)


async def test_without_trust_on_first_use_only_an_operator_binds_an_agent(
    strict: ScriptExecutorHandlers,
) -> None:
    with pytest.raises(AgentRefused, match="unknown_agent"):
        await beat(strict, "web-01", domain="d1")
    allow = AgentBinding(agent_sn="web-01", domain_id="d9", vm_uuid="vm-9", account="agent-web-01")
    reply = await strict.reports.allow_agent(
        incoming("coc.agent.allow", allow.model_dump_json(), "d9")
    )
    assert reply.status == 200 and reply.body["domain_id"] == "d9"
    await beat(strict, "web-01", domain="d1", user="agent-web-01", vm_uuid="vm-9")
    assert await binding(strict, "web-01") == ("d9", "vm-9")  # the operator's, not the header's
    doc = await strict.store.get(AGENTS_COLLECTION, "web-01")
    assert strict.liveness.alive(doc, "d9") and not strict.liveness.alive(doc, "d1")
    moved = allow.model_copy(update={"domain_id": "d8"})
    await strict.reports.allow_agent(incoming("coc.agent.allow", moved.model_dump_json(), "d8"))
    assert await binding(strict, "web-01") == ("d8", "vm-9")

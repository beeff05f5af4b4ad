"""Agents: who an agent is, which tenant and VM it serves, and whether it is alive.

An agent runs on a host someone else may control, so nothing it says about itself is
taken from its body. Its identity is what the broker vouches for: the SN in the routing
key it published under (topic permissions restrict each agent's account to
`agent.<SN>.`) and the AMQP `user_id` (RabbitMQ refuses one that is not the
connection's user). Its binding — tenant, VM and account — is kept here, set by an
operator (`rehost agents allow`), or by its first heartbeat where the deployment opts
into trust on first use, and never moved by a heartbeat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shared import metrics
from shared.aggregates import Decision
from shared.consumer import PermanentError
from shared.contracts.scripts import AgentBinding, Heartbeat
from shared.envelope import Incoming, Reply
from shared.store import Document, Store
from shared.topology import agent_sn_of

from .stored import agent_of

AGENTS_COLLECTION = "agents"
CACHE_SECONDS = 1.0


class AgentRefused(PermanentError):
    """An agent's event that its identity does not allow: dead-lettered with the reason."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"agent refused ({reason}): {detail}")
        self.reason = reason


@dataclass(frozen=True)
class Claim:
    """What the broker vouches for about an agent's event."""

    agent_sn: str
    user_id: str | None
    domain_id: str | None  # the agent's own header: only trusted on first use

    @classmethod
    def of(cls, incoming: Incoming) -> Claim:
        agent_sn = agent_sn_of(incoming.routing_key)
        if agent_sn is None:
            raise refused("routing_key", f"{incoming.routing_key!r} names no agent")
        return cls(agent_sn, incoming.user_id, incoming.domain_id)


def refused(reason: str, detail: str) -> AgentRefused:
    metrics.agent_events_refused.add(1, {"reason": reason})
    return AgentRefused(reason, detail)


def check(binding: Document | None, claim: Claim, body_sn: str) -> Document:
    """The agent's binding, when the event may come from it; raises AgentRefused."""
    if body_sn != claim.agent_sn:
        raise refused(
            "sn_mismatch", f"the body names {body_sn!r}, the routing key {claim.agent_sn!r}"
        )
    if binding is None:
        raise refused("unknown_agent", f"agent {claim.agent_sn!r} is not allowed")
    account = agent_of(binding).get("account")
    if account and claim.user_id != account:
        raise refused(
            "wrong_account",
            f"agent {claim.agent_sn!r} publishes as {account!r}, not {claim.user_id!r}",
        )
    return binding


def fresh_for(offline_after: float, heartbeat: float) -> float:
    """How long a stored `last_seen` may go unrefreshed by a heartbeat that says nothing
    else new. Every heartbeat was a write (a fleet's biggest load on the executor's store);
    skipping those whose last write is this recent keeps an alive agent's `last_seen` within
    this plus two heartbeats of now, which is still inside `offline_after`: a third of it
    at most, and never so much that one late heartbeat would read as offline."""
    return max(0.0, min(offline_after / 3, offline_after - 2 * heartbeat))


def heartbeat(
    current: Document | None,
    claim: Claim,
    beat: Heartbeat,
    now: float,
    *,
    first_use: str | None,
    vm_taken: bool,
    fresh: float = 0.0,
) -> Decision:
    """Records the agent as alive. `first_use`: the tenant an unknown agent is bound to
    (trust on first use), or None when only an operator binds agents. `vm_taken`: the VM
    it names already has another agent. `fresh`: how recent a `last_seen` needs no new
    write when nothing else the agent says has changed (`fresh_for`)."""
    if current is None and first_use is not None and beat.agent_sn == claim.agent_sn:
        vm_uuid = None if vm_taken else beat.vm_uuid
        claimed = AgentBinding(
            agent_sn=claim.agent_sn, domain_id=first_use, vm_uuid=vm_uuid, account=claim.user_id
        )
        current = bound(None, claimed, "first_use")
    binding = check(current, claim, beat.agent_sn)
    bound_vm = agent_of(binding).get("vm_uuid")
    if beat.vm_uuid != bound_vm:
        raise refused(
            "vm_mismatch",
            f"agent {claim.agent_sn!r} names VM {beat.vm_uuid!r}, bound to {bound_vm!r}",
        )
    alive = beat.model_dump(mode="json", include={"vm_name", "hostname", "running", "at"})
    said = {k: v for k, v in alive.items() if k != "at"}  # `at` is its clock: always new
    recent = binding.data.get("last_seen", 0.0) >= now - fresh
    if recent and all(binding.data.get(k) == v for k, v in said.items()):
        return Decision(reply=Reply(status=200, body={}))  # alive, and known to be
    doc = binding.evolve(data={**binding.data, **alive, "last_seen": now})
    return Decision(reply=Reply(status=200, body={}), doc=doc)


def bound(current: Document | None, binding: AgentBinding, by: str) -> Document:
    """The agent's document with this binding; what it last said of itself is kept."""
    data = {
        **(current.data if current is not None else {}),
        **binding.model_dump(mode="json", exclude={"domain_id"}),
        "bound_by": by,
    }
    base = current or Document(id=binding.agent_sn, domain_id=binding.domain_id, data={})
    return base.evolve(domain_id=binding.domain_id, data=data)


def allow(current: Document | None, binding: AgentBinding) -> Decision:
    """An operator binds (or moves) an agent."""
    doc = bound(current, binding, "operator")
    return Decision(reply=Reply(status=200, body=binding.model_dump(mode="json")), doc=doc)


class Liveness:
    """Which agents are online for a tenant. Last heartbeats are read at most once a
    second, all stale ones in one read: every report of a fleet-wide execution asks about
    all its waiting hosts, and a second's staleness is nothing beside the seconds an agent
    needs to count as offline."""

    def __init__(self, store: Store, offline_after: float) -> None:
        self.store = store
        self.offline_after = offline_after
        self._cache: dict[str, tuple[float, Document | None]] = {}

    def seen(self, agent_sn: str) -> None:
        """A heartbeat was stored: the next read is fresh."""
        self._cache.pop(agent_sn, None)

    async def online(self, agent_sns: set[str], domain_id: str, now: float) -> frozenset[str]:
        agents = await self._read(agent_sns, now)
        return frozenset(sn for sn, doc in agents.items() if self.alive(doc, domain_id, now))

    def alive(self, agent: Document | None, domain_id: str, now: float | None = None) -> bool:
        if agent is None or agent.domain_id != domain_id:
            return False
        now = time.time() if now is None else now
        return agent_of(agent).get("last_seen", 0.0) >= now - self.offline_after

    async def _read(self, agent_sns: set[str], now: float) -> dict[str, Document | None]:
        agents = {
            sn: cached[1]
            for sn in agent_sns
            if (cached := self._cache.get(sn)) is not None and now - cached[0] < CACHE_SECONDS
        }
        # Read from `agents` only: a heartbeat handled during the read drops its agent
        # from the cache.
        stale = [sn for sn in agent_sns if sn not in agents]
        if stale:
            found = await self.store.get_many(AGENTS_COLLECTION, stale)
            for sn in stale:
                agents[sn] = found.get(sn)
                self._cache[sn] = (now, agents[sn])
        return agents

"""What agents send: their binding (`coc.agent.allow`, from an operator), heartbeats, and
reports on runs, checked against what the broker vouches for (`agents.py`). Reports on
one execution are folded into one change."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from shared.aggregates import Decision, apply
from shared.bus import Unavailable
from shared.coalescer import Coalescer
from shared.config import Settings
from shared.consumer import PermanentError
from shared.contracts.scripts import AgentBinding, Heartbeat, RunFinished
from shared.envelope import Incoming, Reply, derived_id
from shared.store import Document, Query, Store

from . import agents, executions, vm_commands
from .agents import AGENTS_COLLECTION as AGENTS
from .agents import AgentRefused, Claim, Liveness
from .guest_commands import GuestCommands
from .orders import EXECUTIONS, OUTPUTS, Orders, decision_of
from .stored import execution_of


@dataclass(frozen=True)
class Report:
    """An agent's report on one run, with the message that carried it."""

    message_id: str
    agent_sn: str  # as the broker vouches for it, not as the body says
    domain_id: str  # the agent's binding
    instance_id: int
    result: RunFinished


class AgentReports:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        liveness: Liveness,
        orders: Orders,
        guests: GuestCommands,
    ) -> None:
        self.store = store
        self.settings = settings
        self.liveness = liveness
        self.orders = orders
        self.guests = guests
        self.fresh = agents.fresh_for(settings.agent_offline_after, settings.agent_heartbeat)
        # Reports on one execution are applied one batch at a time in this process: run
        # concurrently, the hosts of a batch would all conflict on the one document.
        # The other reports of a batch that failed to apply are held, not dead-lettered.
        self._reports = Coalescer[Report, None](
            self._apply_reports, lambda exc: Unavailable(f"applying reports failed: {exc!r}")
        )

    async def allow_agent(self, incoming: Incoming) -> Reply:
        binding = incoming.read(AgentBinding)
        reply = await apply(
            self.store,
            AGENTS,
            incoming.message_id,
            lambda: self.store.get(AGENTS, binding.agent_sn),
            lambda current: agents.allow(current, binding),
        )
        self.liveness.seen(binding.agent_sn)
        return reply

    async def heartbeat(self, incoming: Incoming) -> None:
        beat = incoming.read(Heartbeat)
        claim = Claim.of(incoming)
        current = await self.store.get(AGENTS, claim.agent_sn)
        first_use = None
        vm_taken = False
        if current is None and self.settings.agent_trust_on_first_use:
            first_use = claim.domain_id or self.settings.agent_domain
            vm_taken = beat.vm_uuid is not None and await self._vm_taken(beat.vm_uuid)
        loaded = [current]

        async def load() -> Document | None:
            return loaded.pop() if loaded else await self.store.get(AGENTS, claim.agent_sn)

        def decide(current: Document | None) -> Decision:
            return agents.heartbeat(
                current,
                claim,
                beat,
                time.time(),
                first_use=first_use,
                vm_taken=vm_taken,
                fresh=self.fresh,
            )

        await apply(self.store, AGENTS, incoming.message_id, load, decide)
        self.liveness.seen(claim.agent_sn)

    async def _vm_taken(self, vm_uuid: str) -> bool:
        found = await self.store.find(AGENTS, Query(equals={"vm_uuid": vm_uuid}, limit=1))
        return bool(found.items)

    async def run_finished(self, incoming: Incoming) -> None:
        result = incoming.read(RunFinished)
        claim = Claim.of(incoming)
        binding = agents.check(await self.store.get(AGENTS, claim.agent_sn), claim, result.agent_sn)
        if result.run_id.startswith(vm_commands.PREFIX):
            await self.guests.finished(incoming.message_id, result, claim.agent_sn)
            return
        parsed = executions.parse_run_id(result.run_id)
        if parsed is None:
            raise PermanentError(f"unknown run id {result.run_id!r}")
        execute_uuid, instance_id = parsed
        report = Report(incoming.message_id, claim.agent_sn, binding.domain_id, instance_id, result)
        await self._reports.submit(execute_uuid, report)

    async def _apply_reports(
        self, execute_uuid: str, reports: list[Report]
    ) -> Sequence[BaseException | None]:
        """One load, one liveness read and one change for all `reports` that their agents
        may make; their outputs are stored before it."""
        doc = await self.store.get(EXECUTIONS, execute_uuid)
        refusals = [_refusal(doc, report) for report in reports]
        ours = [r for r, refusal in zip(reports, refusals, strict=True) if refusal is None]
        if doc is None or not ours:
            return refusals
        # Hosts only ever leave READY, so liveness read for `doc` covers any later state.
        ctx = await self.orders.context(execution_of(doc), doc.domain_id)
        loaded = [doc]

        async def load() -> Document | None:
            return loaded.pop() if loaded else await self.store.get(EXECUTIONS, execute_uuid)

        def decide(current: Document | None) -> Decision:
            assert current is not None
            results = [r.result for r in ours]
            data = execution_of(current)
            outcome = executions.hosts_finished(data, results, ctx.at(time.time()))
            if outcome.data == data:  # all late or repeated: nothing to store
                return Decision(reply=Reply(status=200, body={}))
            return decision_of(current, outcome, Reply(status=200, body={}), ctx.grace)

        # Named by all the reports it holds: one of them seen before (a redelivery) must
        # not make the duplicate guard skip the others.
        fold_id = derived_id(",".join(sorted(r.message_id for r in ours)), "reports")
        # Outputs first: a host reads finished only once its output can be read (on MongoDB
        # the two are separate writes; seen failing when the execution's came first).
        await asyncio.gather(*(self._keep_output(doc, r) for r in ours))
        await apply(self.store, EXECUTIONS, fold_id, load, decide)
        return refusals

    async def _keep_output(self, doc: Document, report: Report) -> None:
        result = report.result
        output = Document(
            id=result.run_id,
            domain_id=doc.domain_id,
            data={
                "execute_uuid": doc.id,
                "instance_id": report.instance_id,
                "stdout": result.stdout,
                "stderr": result.stderr,
                "dropped_bytes": result.dropped_bytes,
            },
        )
        await apply(
            self.store,
            OUTPUTS,
            f"{result.run_id}:output",
            lambda: self.store.get(OUTPUTS, result.run_id),
            lambda current: Decision(reply=Reply(status=200), doc=None if current else output),
        )


def _refusal(doc: Document | None, report: Report) -> AgentRefused | None:
    """Why an agent's report may not touch the execution: a run is reported on only by the
    agent it was dispatched to, of the execution's own tenant."""
    run_id = report.result.run_id
    sent_to = None if doc is None else executions.dispatched_to(execution_of(doc), run_id)
    if doc is None or sent_to != report.agent_sn or doc.domain_id != report.domain_id:
        return agents.refused(
            "not_dispatched",
            f"run {run_id} was not sent to agent {report.agent_sn!r}",
        )
    return None

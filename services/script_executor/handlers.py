"""The script-executor's handlers: scripts, executions on fleets, agent reports, VM commands.

Executions follow `executions.py`; a handler loads the execution, asks which of its
agents are online, lets the rules decide, and saves the new state with its events
and the agents' runs in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from shared.aggregates import Decision, NewCommand, NewEvent, apply, refusal, reject, visible
from shared.bus import Requester, Unavailable
from shared.coalescer import Coalescer
from shared.config import Settings
from shared.consumer import Handler, PermanentError, query, tenant
from shared.contracts.scripts import (
    AgentBinding,
    AgentRun,
    ExecuteCommand,
    Heartbeat,
    OrderOperationCommand,
    OrderQuery,
    OrderRef,
    RunFinished,
    ScriptBody,
    ScriptPage,
    ScriptRef,
)
from shared.contracts.zstack import VmCommand
from shared.envelope import Incoming, Reply, derived_id, utcnow
from shared.errors import CocCode
from shared.keys import scoped
from shared.store import Document, Query, Store, find_all
from shared.topology import agent_queue

from . import agents, executions, scripts, views, vm_commands
from .agents import AGENTS_COLLECTION as AGENTS
from .agents import AgentRefused, Claim, Liveness
from .executions import Context, Outcome
from .stored import Execution, execution_of, run_of, stored
from .views import batch_detail, batch_summaries, order_summary

EXECUTIONS = "executions"
OUTPUTS = "outputs"


def execution_not_found(execute_uuid: str) -> Reply:
    return refusal(CocCode.EXECUTION_NOT_FOUND, f"Script execution {execute_uuid} does not exist.")


@dataclass(frozen=True)
class Report:
    """An agent's report on one run, with the message that carried it."""

    message_id: str
    agent_sn: str  # as the broker vouches for it, not as the body says
    domain_id: str  # the agent's binding
    instance_id: int
    result: RunFinished


def decision_of(doc: Document, outcome: Outcome, reply: Reply, grace: float) -> Decision:
    runs = tuple(
        NewCommand(
            agent_queue(sn),
            run.model_dump(mode="json"),
            exchange="",
            expiration=run.timeout + grace,
        )
        for sn, run in outcome.runs
    )
    cancels = tuple(
        NewCommand(agent_queue(sn), AgentRun(kind="cancel", run_id=rid).model_dump(), exchange="")
        for sn, rid in outcome.cancels
    )
    return Decision(
        reply=reply,
        doc=doc.evolve(data=stored(outcome.data)),
        events=tuple(NewEvent(kind, data) for kind, data in outcome.events),
        commands=runs + cancels,
    )


class ScriptExecutorHandlers:
    def __init__(self, store: Store, requester: Requester, settings: Settings) -> None:
        self.store = store
        self.requester = requester
        self.settings = settings
        self.liveness = Liveness(store, settings.agent_offline_after)
        # Reports on one execution are applied one batch at a time in this process: run
        # concurrently, the hosts of a batch would all conflict on the one document.
        # The other reports of a batch that failed to apply are held, not dead-lettered.
        self._reports = Coalescer[Report](
            self._apply_reports, lambda exc: Unavailable(f"applying reports failed: {exc!r}")
        )

    def routes(self) -> dict[str, Handler]:
        return {
            "coc.script.create": self.create_script,
            "coc.script.get": self.get_script,
            "coc.script.list": self.list_scripts,
            "coc.script.delete": self.delete_script,
            "coc.script.execute": self.execute,
            "coc.order.get": self.get_order,
            "coc.order.list": self.list_orders,
            "coc.order.batches": self.order_batches,
            "coc.order.batch": self.order_batch,
            "coc.order.statistics": self.order_statistics,
            "coc.order.operate": self.operate,
            "zstack.vm.exec": self.vm_exec,
            "coc.agent.allow": self.allow_agent,
            "agent.*.heartbeat": self.heartbeat,
            "agent.*.finished": self.run_finished,
        }

    # -- scripts ------------------------------------------------------------------

    async def create_script(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        body = ScriptBody.model_validate_json(incoming.body)
        script_uuid = derived_id(incoming.message_id, "script")
        return await apply(
            self.store,
            scripts.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(scripts.COLLECTION, script_uuid),
            lambda current: scripts.create(current, script_uuid, body, domain_id, utcnow()),
        )

    async def _script(self, script_uuid: str, domain_id: str) -> Document | None:
        return visible(await self.store.get(scripts.COLLECTION, script_uuid), domain_id)

    @query
    async def get_script(self, incoming: Incoming) -> Reply:
        ref = ScriptRef.model_validate_json(incoming.body)
        script = await self._script(ref.script_uuid, tenant(incoming))
        if script is None:
            return scripts.not_found(ref.script_uuid)
        return Reply(status=200, body={"data": scripts.view(script)})

    @query
    async def list_scripts(self, incoming: Incoming) -> Reply:
        page = ScriptPage.model_validate_json(incoming.body)
        found = await self.store.find(
            scripts.COLLECTION,
            Query(domain_id=tenant(incoming), limit=page.limit, offset=page.offset),
        )
        body = {"data": [scripts.view(d) for d in found.items], "total": found.total}
        return Reply(status=200, body={"data": body})

    async def delete_script(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        ref = ScriptRef.model_validate_json(incoming.body)
        return await apply(
            self.store,
            scripts.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(scripts.COLLECTION, ref.script_uuid),
            lambda current: scripts.delete(current, ref.script_uuid, domain_id),
        )

    # -- executions -----------------------------------------------------------------

    async def _context(self, data: Execution | None, domain_id: str) -> Context:
        """Which of the execution's waiting hosts have a live agent of this domain."""
        waiting = set()
        if data is not None:
            waiting = {
                h["agent_sn"] for b in data["batches"] for h in b["hosts"] if h["status"] == "READY"
            }
        now = time.time()
        online = await self.liveness.online(waiting, domain_id, now)
        return Context(now=now, online=online, grace=self.settings.run_grace)

    async def execute(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        command = ExecuteCommand.model_validate_json(incoming.body)
        script = await self._script(command.script_uuid, domain_id)
        if script is None:
            return scripts.not_found(command.script_uuid)
        # The idempotency key names the execution, so a retried call finds the first one.
        seed = (
            scoped(domain_id, command.idempotency_key)
            if command.idempotency_key
            else incoming.message_id
        )
        execute_uuid = "SCT" + derived_id(seed, "execution")[:24]
        reply = Reply(status=200, body={"data": execute_uuid})
        params = scripts.bind_params(script, command.execute_param.script_params)
        view = {**script.data, "script_uuid": script.id}
        data = executions.new_execution(execute_uuid, view, command, time.time(), params)
        data["creator"] = incoming.actor or None
        ctx = await self._context(data, domain_id)

        def decide(current: Document | None) -> Decision:
            if current is not None:
                return Decision(reply=reply)
            outcome = executions.start(data, ctx.at(time.time()))
            doc = Document(id=execute_uuid, domain_id=domain_id, data={}, created_at=ctx.now)
            return decision_of(doc, outcome, reply, ctx.grace)

        return await apply(
            self.store,
            EXECUTIONS,
            incoming.message_id,
            lambda: self.store.get(EXECUTIONS, execute_uuid),
            decide,
        )

    async def _execution(self, execute_uuid: str, domain_id: str) -> Document | None:
        doc = await self.store.get(EXECUTIONS, execute_uuid)
        return doc if doc is not None and doc.domain_id == domain_id else None

    async def _read_order(self, incoming: Incoming, view: Callable[[Execution], Any]) -> Reply:
        """`{"data": view(execution)}`, or 404 when the caller's domain has no such execution."""
        ref = OrderRef.model_validate_json(incoming.body)
        doc = await self._execution(ref.execute_uuid, tenant(incoming))
        if doc is None:
            return execution_not_found(ref.execute_uuid)
        return Reply(status=200, body={"data": view(execution_of(doc))})

    @query
    async def get_order(self, incoming: Incoming) -> Reply:
        return await self._read_order(incoming, order_summary)

    @query
    async def list_orders(self, incoming: Incoming) -> Reply:
        query = OrderQuery.model_validate_json(incoming.body)
        internal = {"ABNORMAL": "FINISHED"}.get(query.status or "", query.status)
        equals = {"status": internal} if internal else {}
        found = await find_all(
            self.store, EXECUTIONS, Query(domain_id=tenant(incoming), equals=equals)
        )
        executions_found = [execution_of(d) for d in found]
        matching = [data for data in executions_found if views.order_matches(data, query)]
        page = matching[query.offset :][: query.limit]
        body = {"data": [order_summary(data) for data in page], "total": len(matching)}
        return Reply(status=200, body={"data": body})

    @query
    async def order_batches(self, incoming: Incoming) -> Reply:
        return await self._read_order(incoming, batch_summaries)

    @query
    async def order_batch(self, incoming: Incoming) -> Reply:
        ref = OrderRef.model_validate_json(incoming.body)
        doc = await self._execution(ref.execute_uuid, tenant(incoming))
        if doc is None:
            return execution_not_found(ref.execute_uuid)
        batches = execution_of(doc)["batches"]
        batch = next((b for b in batches if b["batch_index"] == ref.batch_index), None)
        if batch is None:
            return refusal(CocCode.BATCH_NOT_FOUND, f"There is no batch {ref.batch_index}.")
        outputs = {}
        for host in batch["hosts"]:
            if run := host.get("run_id"):
                output = await self.store.get(OUTPUTS, run)
                if output is not None:
                    outputs[run] = output.data
        detail = batch_detail(batch, outputs, status=ref.status, marker=ref.marker, limit=ref.limit)
        return Reply(status=200, body={"data": detail})

    @query
    async def order_statistics(self, incoming: Incoming) -> Reply:
        return await self._read_order(incoming, views.order_statistics)

    async def operate(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        command = OrderOperationCommand.model_validate_json(incoming.body)
        doc = await self._execution(command.execute_uuid, domain_id)
        if doc is None:
            return execution_not_found(command.execute_uuid)
        reply = Reply(status=200, body={"data": command.execute_uuid})

        async def load() -> Document | None:
            return await self._execution(command.execute_uuid, domain_id)

        ctx = await self._context(execution_of(doc), domain_id)

        def decide(current: Document | None) -> Decision:
            assert current is not None
            try:
                outcome = executions.operate(
                    execution_of(current),
                    command.operation_type,
                    ctx.at(time.time()),
                    batch_index=command.batch_index,
                    instance_id=command.instance_id,
                )
            except executions.OperationRefused as exc:
                return reject(CocCode.EXECUTION_STATE_CONFLICT, f"{command.operation_type}: {exc}.")
            return decision_of(current, outcome, reply, ctx.grace)

        return await apply(self.store, EXECUTIONS, incoming.message_id, load, decide)

    # -- agents: who they are, and what they report -----------------------------------

    async def allow_agent(self, incoming: Incoming) -> Reply:
        binding = AgentBinding.model_validate_json(incoming.body)
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
        beat = Heartbeat.model_validate_json(incoming.body)
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
                current, claim, beat, time.time(), first_use=first_use, vm_taken=vm_taken
            )

        await apply(self.store, AGENTS, incoming.message_id, load, decide)
        self.liveness.seen(claim.agent_sn)

    async def _vm_taken(self, vm_uuid: str) -> bool:
        found = await self.store.find(AGENTS, Query(equals={"vm_uuid": vm_uuid}, limit=1))
        return bool(found.items)

    async def run_finished(self, incoming: Incoming) -> None:
        result = RunFinished.model_validate_json(incoming.body)
        claim = Claim.of(incoming)
        binding = agents.check(await self.store.get(AGENTS, claim.agent_sn), claim, result.agent_sn)
        if result.run_id.startswith(vm_commands.PREFIX):
            await self._vm_finished(incoming.message_id, result, claim.agent_sn)
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
        ctx = await self._context(execution_of(doc), doc.domain_id)
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

    async def expire_overdue(self) -> None:
        """Marks TIMEOUT the hosts and VM commands whose agents did not answer in time
        (run every second): every processing one, however many there are."""
        now = time.time()
        processing = Query(equals={"status": "PROCESSING"})
        for doc in await find_all(self.store, EXECUTIONS, processing):
            overdue = any(
                h["status"] == "PROCESSING" and h.get("deadline", now) < now
                for b in execution_of(doc)["batches"]
                for h in b["hosts"]
            )
            if overdue:
                await self._expire(doc)
        for doc in await find_all(self.store, vm_commands.COLLECTION, processing):
            if run_of(doc)["deadline"] < now:
                await self._vm_expired(doc.id)

    async def _expire(self, doc: Document) -> None:
        ctx = await self._context(execution_of(doc), doc.domain_id)

        def decide(current: Document | None) -> Decision:
            assert current is not None
            outcome = executions.expire(execution_of(current), ctx.at(time.time()))
            return decision_of(current, outcome, Reply(status=200, body={}), ctx.grace)

        await apply(
            self.store,
            EXECUTIONS,
            f"expire:{doc.id}:{doc.version}",
            lambda: self.store.get(EXECUTIONS, doc.id),
            decide,
        )

    # -- ZStack guest-VM commands -----------------------------------------------------

    async def vm_exec(self, incoming: Incoming) -> Reply | None:
        """Sends the command to the VM's agent and returns without a reply: the caller is
        answered when the agent reports (or the run expires), so no delivery is held while
        the command runs."""
        domain_id = tenant(incoming)
        command = VmCommand.model_validate_json(incoming.body)
        vm_uuid = command.params.vmInstanceUuid
        found = await self.store.find(
            AGENTS, Query(domain_id=domain_id, equals={"vm_uuid": vm_uuid}, limit=1)
        )
        agent = found.items[0] if found.items else None
        online = agent is not None and self.liveness.alive(agent, domain_id)
        refusal = vm_commands.why_not_sent(command, agent, online)
        if refusal is not None or agent is None:
            return refusal
        run_id = vm_commands.PREFIX + derived_id(incoming.message_id, "vm")
        caller = vm_commands.Caller(incoming.reply_to, incoming.correlation_id)
        await apply(
            self.store,
            vm_commands.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(vm_commands.COLLECTION, run_id),
            lambda current: vm_commands.dispatch(
                current, run_id, agent, command, caller, time.time(), self.settings.run_grace
            ),
        )
        # A redelivered request whose run has finished meanwhile is answered now.
        run = await self.store.get(vm_commands.COLLECTION, run_id)
        if run is not None and run_of(run)["status"] != "PROCESSING":
            return vm_commands.answer(run_of(run))
        return None

    async def _vm_finished(self, message_id: str, result: RunFinished, agent_sn: str) -> None:
        await self._vm_change(
            message_id, result.run_id, lambda current: vm_commands.finish(current, result, agent_sn)
        )

    async def _vm_expired(self, run_id: str) -> None:
        await self._vm_change(f"expire:{run_id}", run_id, vm_commands.expire)

    async def _vm_change(
        self, message_id: str, run_id: str, decide: Callable[[Document | None], Decision]
    ) -> None:
        """Applies a run's end and answers the caller waiting for it."""
        changed: list[Document] = []

        def deciding(current: Document | None) -> Decision:
            decision = decide(current)
            changed[:] = [] if decision.doc is None else [decision.doc]
            return decision

        collection = vm_commands.COLLECTION
        await apply(
            self.store, collection, message_id, lambda: self.store.get(collection, run_id), deciding
        )
        for doc in changed:
            run = run_of(doc)
            with contextlib.suppress(Unavailable):  # the caller then gets its 503
                await self.requester.bus.answer(
                    run["reply_to"], run["correlation_id"], vm_commands.answer(run)
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

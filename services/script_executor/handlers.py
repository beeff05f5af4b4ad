"""The script-executor's handlers: scripts, executions on fleets, agent reports, VM commands.

Executions follow `executions.py`; a handler loads the execution, asks which of its
agents are online, lets the rules decide, and saves the new state with its events
and the agents' runs in the outbox.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakValueDictionary

from shared.aggregates import Decision, NewCommand, NewEvent, apply
from shared.bus import Requester, Unavailable
from shared.config import Settings
from shared.consumer import Handler, PermanentError, tenant
from shared.contracts.scripts import (
    AgentRun,
    ExecuteCommand,
    Heartbeat,
    OrderOperationCommand,
    OrderRef,
    Page,
    RunFinished,
    ScriptBody,
    ScriptRef,
)
from shared.contracts.zstack import VmCommand
from shared.envelope import Incoming, Reply, derived_id, utcnow
from shared.errors import ApiError, CocCode
from shared.store import Document, Query, Store

from . import executions, scripts, vm_commands
from .executions import Context, Outcome
from .views import batch_detail, batch_summaries, order_summary

EXECUTIONS = "executions"
OUTPUTS = "outputs"
AGENTS = "agents"
AGENT_CACHE_SECONDS = 1.0


def agent_queue(agent_sn: str) -> str:
    return f"rehost.agent.{agent_sn}"


def execution_not_found(execute_uuid: str) -> Reply:
    error = ApiError(
        CocCode.EXECUTION_NOT_FOUND, f"Script execution {execute_uuid} does not exist."
    )
    return Reply(status=error.status, body=error.body())


@dataclass(frozen=True)
class Report:
    """An agent's report on one run, with the message that carried it."""

    message_id: str
    domain_id: str | None
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
        doc=doc.evolve(data=outcome.data),
        events=tuple(NewEvent(kind, data) for kind, data in outcome.events),
        commands=runs + cancels,
    )


class ScriptExecutorHandlers:
    def __init__(self, store: Store, requester: Requester, settings: Settings) -> None:
        self.store = store
        self.requester = requester
        self.settings = settings
        self._agents: dict[str, tuple[float, Document | None]] = {}
        self._reports: dict[str, list[tuple[Report, asyncio.Future[None]]]] = {}
        # Reports on one execution are applied one at a time in this process: run
        # concurrently, the hosts of a batch would all conflict on the one document.
        self._execution_locks: WeakValueDictionary[str, asyncio.Lock] = WeakValueDictionary()

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
        return scripts.visible(await self.store.get(scripts.COLLECTION, script_uuid), domain_id)

    async def get_script(self, incoming: Incoming) -> Reply:
        ref = ScriptRef.model_validate_json(incoming.body)
        script = await self._script(ref.script_uuid, tenant(incoming))
        if script is None:
            return scripts.not_found(ref.script_uuid)
        return Reply(status=200, body={"data": scripts.view(script)})

    async def list_scripts(self, incoming: Incoming) -> Reply:
        page = Page.model_validate_json(incoming.body)
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

    async def _context(self, data: dict[str, Any] | None, domain_id: str) -> Context:
        """Which of the execution's waiting hosts have a live agent of this domain."""
        waiting = set()
        if data is not None:
            waiting = {
                h["agent_sn"] for b in data["batches"] for h in b["hosts"] if h["status"] == "READY"
            }
        now = time.time()
        agents = await self._agents_of(waiting, now)
        online = {sn for sn, agent in agents.items() if self._alive(agent, domain_id, now)}
        return Context(now=now, online=frozenset(online), grace=self.settings.run_grace)

    async def _agents_of(self, agent_sns: set[str], now: float) -> dict[str, Document | None]:
        """The agents' last heartbeats, each read at most once a second and all stale ones
        in one read: every report of a fleet-wide execution asks about all its waiting
        hosts, and a second's staleness is nothing beside the seconds an agent needs to
        count as offline."""
        cache = self._agents
        agents = {
            sn: cached[1]
            for sn in agent_sns
            if (cached := cache.get(sn)) is not None and now - cached[0] < AGENT_CACHE_SECONDS
        }
        # Read from `agents` only: a heartbeat handled during the read drops its agent
        # from the cache.
        stale = [sn for sn in agent_sns if sn not in agents]
        if stale:
            found = await self.store.get_many(AGENTS, stale)
            for sn in stale:
                agents[sn] = found.get(sn)
                cache[sn] = (now, agents[sn])
        return agents

    def _alive(self, agent: Document | None, domain_id: str, now: float) -> bool:
        if agent is None:
            return False
        fresh = agent.data.get("last_seen", 0) >= now - self.settings.agent_offline_after
        return fresh and agent.domain_id == domain_id

    async def execute(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        command = ExecuteCommand.model_validate_json(incoming.body)
        script = await self._script(command.script_uuid, domain_id)
        if script is None:
            return scripts.not_found(command.script_uuid)
        # The idempotency key names the execution, so a retried call finds the first one.
        seed = (
            f"{domain_id}:{command.idempotency_key}"
            if command.idempotency_key
            else incoming.message_id
        )
        execute_uuid = "SCT" + derived_id(seed, "execution")[:24]
        reply = Reply(status=200, body={"data": execute_uuid})
        data = executions.new_execution(execute_uuid, scripts.view(script), command, time.time())
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

    async def _read_order(self, incoming: Incoming, view: Callable[[dict[str, Any]], Any]) -> Reply:
        """`{"data": view(execution)}`, or 404 when the caller's domain has no such execution."""
        ref = OrderRef.model_validate_json(incoming.body)
        doc = await self._execution(ref.execute_uuid, tenant(incoming))
        if doc is None:
            return execution_not_found(ref.execute_uuid)
        return Reply(status=200, body={"data": view(doc.data)})

    async def get_order(self, incoming: Incoming) -> Reply:
        return await self._read_order(incoming, order_summary)

    async def list_orders(self, incoming: Incoming) -> Reply:
        page = Page.model_validate_json(incoming.body)
        found = await self.store.find(
            EXECUTIONS, Query(domain_id=tenant(incoming), limit=page.limit, offset=page.offset)
        )
        body = {"data": [order_summary(d.data) for d in found.items], "total": found.total}
        return Reply(status=200, body={"data": body})

    async def order_batches(self, incoming: Incoming) -> Reply:
        return await self._read_order(incoming, batch_summaries)

    async def order_batch(self, incoming: Incoming) -> Reply:
        ref = OrderRef.model_validate_json(incoming.body)
        doc = await self._execution(ref.execute_uuid, tenant(incoming))
        if doc is None:
            return execution_not_found(ref.execute_uuid)
        batch = next((b for b in doc.data["batches"] if b["batch_index"] == ref.batch_index), None)
        if batch is None:
            error = ApiError(CocCode.BATCH_NOT_FOUND, f"There is no batch {ref.batch_index}.")
            return Reply(status=error.status, body=error.body())
        outputs = {}
        for host in batch["hosts"]:
            if host.get("run_id"):
                output = await self.store.get(OUTPUTS, host["run_id"])
                if output is not None:
                    outputs[host["run_id"]] = output.data
        return Reply(status=200, body={"data": batch_detail(batch, outputs)})

    async def order_statistics(self, incoming: Incoming) -> Reply:
        return await self._read_order(incoming, executions.statistics)

    async def operate(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        command = OrderOperationCommand.model_validate_json(incoming.body)
        doc = await self._execution(command.execute_uuid, domain_id)
        if doc is None:
            return execution_not_found(command.execute_uuid)
        reply = Reply(status=200, body={"data": command.execute_uuid})

        async def load() -> Document | None:
            return await self._execution(command.execute_uuid, domain_id)

        ctx = await self._context(doc.data, domain_id)

        def decide(current: Document | None) -> Decision:
            assert current is not None
            try:
                outcome = executions.operate(
                    current.data,
                    command.operation_type,
                    ctx.at(time.time()),
                    batch_index=command.batch_index,
                    instance_id=command.instance_id,
                )
            except executions.Refused as exc:
                error = ApiError(
                    CocCode.EXECUTION_STATE_CONFLICT, f"{command.operation_type}: {exc}."
                )
                return Decision(reply=Reply(status=error.status, body=error.body()))
            return decision_of(current, outcome, reply, ctx.grace)

        return await apply(self.store, EXECUTIONS, incoming.message_id, load, decide)

    # -- what agents report ---------------------------------------------------------

    async def heartbeat(self, incoming: Incoming) -> None:
        beat = Heartbeat.model_validate_json(incoming.body)
        domain_id = incoming.domain_id or self.settings.agent_domain
        data = {**beat.model_dump(mode="json"), "last_seen": time.time()}

        def decide(current: Document | None) -> Decision:
            base = current or Document(id=beat.agent_sn, domain_id=domain_id, data={})
            doc = base.evolve(domain_id=domain_id, data=data)
            return Decision(reply=Reply(status=200, body={}), doc=doc)

        await apply(
            self.store,
            AGENTS,
            incoming.message_id,
            lambda: self.store.get(AGENTS, beat.agent_sn),
            decide,
        )
        self._agents.pop(beat.agent_sn, None)  # seen alive: the next read is fresh

    async def run_finished(self, incoming: Incoming) -> None:
        result = RunFinished.model_validate_json(incoming.body)
        if result.run_id.startswith(vm_commands.PREFIX):
            await vm_commands.record(self.store, incoming.message_id, result)
            return
        parsed = executions.parse_run_id(result.run_id)
        if parsed is None:
            raise PermanentError(f"unknown run id {result.run_id!r}")
        execute_uuid, instance_id = parsed
        report = Report(incoming.message_id, incoming.domain_id, instance_id, result)
        await self._in_turn(execute_uuid, report)

    async def _in_turn(self, execute_uuid: str, report: Report) -> None:
        """Applies the report once the execution's earlier reports are applied, together
        with any that queued up meanwhile: a batch's hosts finish at nearly the same time,
        and one change for all of them beats as many conflicting ones. Each report's
        handler returns (and its message is acked) only once the change holding it is
        stored, and fails with it."""
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reports.setdefault(execute_uuid, []).append((report, mine))
        async with self._execution_locks.setdefault(execute_uuid, asyncio.Lock()):
            if not mine.done():
                queued = self._reports.pop(execute_uuid, [])
                try:
                    await self._apply_reports(execute_uuid, [r for r, _ in queued])
                except BaseException as exc:
                    for _, theirs in queued:
                        if theirs is not mine:
                            theirs.set_exception(Unavailable(f"applying reports failed: {exc!r}"))
                    raise
                for _, theirs in queued:
                    theirs.set_result(None)
        await mine

    async def _apply_reports(self, execute_uuid: str, reports: list[Report]) -> None:
        """One load, one liveness read and one change for all `reports`; their outputs
        are kept beside it, in the same group commit."""
        doc = await self.store.get(EXECUTIONS, execute_uuid)
        if doc is None:
            return
        # A report from another domain's agent says nothing about this execution.
        ours = [r for r in reports if (r.domain_id or doc.domain_id) == doc.domain_id]
        if not ours:
            return
        # Hosts only ever leave READY, so liveness read for `doc` covers any later state.
        ctx = await self._context(doc.data, doc.domain_id)
        loaded = [doc]

        async def load() -> Document | None:
            return loaded.pop() if loaded else await self.store.get(EXECUTIONS, execute_uuid)

        def decide(current: Document | None) -> Decision:
            assert current is not None
            results = [r.result for r in ours]
            outcome = executions.hosts_finished(current.data, results, ctx.at(time.time()))
            if outcome.data == current.data:  # all late or repeated: nothing to store
                return Decision(reply=Reply(status=200, body={}))
            return decision_of(current, outcome, Reply(status=200, body={}), ctx.grace)

        # Named by all the reports it holds: one of them seen before (a redelivery) must
        # not make the duplicate guard skip the others.
        fold_id = derived_id(",".join(sorted(r.message_id for r in ours)), "reports")
        await asyncio.gather(
            *(self._keep_output(doc, r) for r in ours),
            apply(self.store, EXECUTIONS, fold_id, load, decide),
        )

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
        """Marks TIMEOUT the hosts whose agents did not answer in time (run every second)."""
        found = await self.store.find(EXECUTIONS, Query(equals={"status": "PROCESSING"}, limit=100))
        now = time.time()
        for doc in found.items:
            overdue = any(
                h["status"] == "PROCESSING" and h.get("deadline", now) < now
                for b in doc.data["batches"]
                for h in b["hosts"]
            )
            if overdue:
                await self._expire(doc)
        await vm_commands.expire(self.store, now)

    async def _expire(self, doc: Document) -> None:
        ctx = await self._context(doc.data, doc.domain_id)

        def decide(current: Document | None) -> Decision:
            assert current is not None
            outcome = executions.expire(current.data, ctx.at(time.time()))
            return decision_of(current, outcome, Reply(status=200, body={}), ctx.grace)

        await apply(
            self.store,
            EXECUTIONS,
            f"expire:{doc.id}:{doc.version}",
            lambda: self.store.get(EXECUTIONS, doc.id),
            decide,
        )

    # -- ZStack guest-VM commands -----------------------------------------------------

    async def vm_exec(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        command = VmCommand.model_validate_json(incoming.body)
        return await vm_commands.execute(
            self.store, incoming.message_id, command, domain_id, self.settings
        )

"""Script executions on fleets (COC ExecuteScript and the order reads and operations):
the handlers, and the sweep that times out hosts whose agents did not answer. The rules
are in `executions.py`; a handler loads the execution, asks which of its agents are
online, lets the rules decide, and saves the new state with its events and the agents'
runs in the outbox."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared.aggregates import Decision, NewCommand, NewEvent, apply, refusal, reject
from shared.config import Settings
from shared.consumer import query, tenant
from shared.contracts.scripts import (
    AgentRun,
    ExecuteCommand,
    OrderOperationCommand,
    OrderQuery,
    OrderRef,
)
from shared.envelope import Incoming, Reply, derived_id
from shared.errors import CocCode
from shared.keys import scoped
from shared.store import Document, Query, Store, find_all
from shared.topology import agent_queue

from . import executions, scripts, views
from .agents import Liveness
from .executions import Context, Outcome
from .library import ScriptLibrary
from .stored import Execution, execution_of, stored
from .views import batch_detail, batch_summaries, order_summary

EXECUTIONS = "executions"
OUTPUTS = "outputs"


def execution_not_found(execute_uuid: str) -> Reply:
    return refusal(CocCode.EXECUTION_NOT_FOUND, f"Script execution {execute_uuid} does not exist.")


def decision_of(doc: Document, outcome: Outcome, reply: Reply, grace: float) -> Decision:
    """The execution's change: its new data and events, and the agents' runs and cancels
    through the outbox (a run no agent took by its timeout plus grace expires unread)."""
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


class Orders:
    def __init__(
        self, store: Store, settings: Settings, liveness: Liveness, library: ScriptLibrary
    ) -> None:
        self.store = store
        self.settings = settings
        self.liveness = liveness
        self.library = library

    async def context(self, data: Execution | None, domain_id: str) -> Context:
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
        command = incoming.read(ExecuteCommand)
        script = await self.library.script(command.script_uuid, domain_id)
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
        ctx = await self.context(data, domain_id)

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
        ref = incoming.read(OrderRef)
        doc = await self._execution(ref.execute_uuid, tenant(incoming))
        if doc is None:
            return execution_not_found(ref.execute_uuid)
        return Reply(status=200, body={"data": view(execution_of(doc))})

    @query
    async def get_order(self, incoming: Incoming) -> Reply:
        return await self._read_order(incoming, order_summary)

    @query
    async def list_orders(self, incoming: Incoming) -> Reply:
        query = incoming.read(OrderQuery)
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
        ref = incoming.read(OrderRef)
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
        command = incoming.read(OrderOperationCommand)
        doc = await self._execution(command.execute_uuid, domain_id)
        if doc is None:
            return execution_not_found(command.execute_uuid)
        reply = Reply(status=200, body={"data": command.execute_uuid})

        async def load() -> Document | None:
            return await self._execution(command.execute_uuid, domain_id)

        ctx = await self.context(execution_of(doc), domain_id)

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

    async def expire_overdue(self) -> None:
        """Marks TIMEOUT the hosts whose agents did not answer in time (run every second):
        every processing execution, however many there are."""
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

    async def _expire(self, doc: Document) -> None:
        ctx = await self.context(execution_of(doc), doc.domain_id)

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

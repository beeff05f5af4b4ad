"""ZStack guest-VM commands (ExecuteGuestVmCommand): the handlers. The request's delivery
is not held while the command runs; whichever replica records the agent's report (or the
sweep that finds the run past its deadline) answers the caller. The rules are in
`vm_commands.py`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from shared.aggregates import Decision, apply
from shared.bus import Requester, Unavailable
from shared.config import Settings
from shared.consumer import tenant
from shared.contracts.scripts import RunFinished
from shared.contracts.zstack import VmCommand
from shared.envelope import Incoming, Reply, derived_id
from shared.store import Document, Query, Store, find_all

from . import vm_commands
from .agents import AGENTS_COLLECTION as AGENTS
from .agents import Liveness
from .stored import run_of


class GuestCommands:
    def __init__(
        self, store: Store, requester: Requester, settings: Settings, liveness: Liveness
    ) -> None:
        self.store = store
        self.requester = requester
        self.settings = settings
        self.liveness = liveness

    async def vm_exec(self, incoming: Incoming) -> Reply | None:
        """Sends the command to the VM's agent and returns without a reply: the caller is
        answered when the agent reports (or the run expires), so no delivery is held while
        the command runs."""
        domain_id = tenant(incoming)
        command = incoming.read(VmCommand)
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
        loaded: list[Document | None] = []

        async def load() -> Document | None:
            loaded.append(await self.store.get(vm_commands.COLLECTION, run_id))
            return loaded[-1]

        await apply(
            self.store,
            vm_commands.COLLECTION,
            incoming.message_id,
            load,
            lambda current: vm_commands.dispatch(
                current, run_id, agent, command, caller, time.time(), self.settings.run_grace
            ),
        )
        # A redelivered request whose run has finished meanwhile is answered now (read as
        # `apply` loaded it: a first delivery reads nothing more).
        earlier = loaded[0]
        if earlier is not None and run_of(earlier)["status"] != "PROCESSING":
            return vm_commands.answer(run_of(earlier))
        return None

    async def finished(self, message_id: str, result: RunFinished, agent_sn: str) -> None:
        await self._change(
            message_id, result.run_id, lambda current: vm_commands.finish(current, result, agent_sn)
        )

    async def _expired(self, run_id: str) -> None:
        await self._change(f"expire:{run_id}", run_id, vm_commands.expire)

    async def _change(
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

    async def expire_overdue(self) -> None:
        """Answers VM.1002 for the runs past their deadline (run every second)."""
        now = time.time()
        processing = Query(equals={"status": "PROCESSING"})
        for doc in await find_all(self.store, vm_commands.COLLECTION, processing):
            if run_of(doc)["deadline"] < now:
                await self._expired(doc.id)

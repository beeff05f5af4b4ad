"""The script-executor's route table: each routing key to the handler of its concern —
the script library (`library.py`), executions on fleets (`orders.py`), what agents send
(`reports.py`) and guest-VM commands (`guest_commands.py`)."""

from __future__ import annotations

from shared.bus import Requester
from shared.config import Settings
from shared.consumer import Handler
from shared.store import Store

from .agents import Liveness
from .guest_commands import GuestCommands
from .library import ScriptLibrary
from .orders import Orders
from .reports import AgentReports


class ScriptExecutorHandlers:
    def __init__(self, store: Store, requester: Requester, settings: Settings) -> None:
        self.store = store
        self.liveness = Liveness(store, settings.agent_offline_after)
        self.library = ScriptLibrary(store)
        self.orders = Orders(store, settings, self.liveness, self.library)
        self.guests = GuestCommands(store, requester, settings, self.liveness)
        self.reports = AgentReports(store, settings, self.liveness, self.orders, self.guests)

    def routes(self) -> dict[str, Handler]:
        library, orders, reports, guests = self.library, self.orders, self.reports, self.guests
        return {
            "coc.script.create": library.create_script,
            "coc.script.get": library.get_script,
            "coc.script.list": library.list_scripts,
            "coc.script.delete": library.delete_script,
            "coc.script.execute": orders.execute,
            "coc.order.get": orders.get_order,
            "coc.order.list": orders.list_orders,
            "coc.order.batches": orders.order_batches,
            "coc.order.batch": orders.order_batch,
            "coc.order.statistics": orders.order_statistics,
            "coc.order.operate": orders.operate,
            "coc.agent.allow": reports.allow_agent,
            "zstack.vm.exec": guests.vm_exec,
            "agent.*.heartbeat": reports.heartbeat,
            "agent.*.finished": reports.run_finished,
        }

    async def expire_overdue(self) -> None:
        """Times out what agents did not answer in time (run every second)."""
        await self.orders.expire_overdue()
        await self.guests.expire_overdue()

"""Queries are marked in each service's route table, where a reader looks for them."""

from __future__ import annotations

from typing import cast

from services.command_result.handlers import CommandResultHandlers
from services.registry.handlers import RegistryHandlers
from services.script_executor.handlers import ScriptExecutorHandlers
from services.task_lock.handlers import TaskLockHandlers
from shared.bus import Requester
from shared.config import Settings
from shared.consumer import Handler, is_query
from shared.store import Store

STORE, REQUESTER = cast(Store, None), cast(Requester, None)


def marked(routes: dict[str, Handler]) -> set[str]:
    return {key for key, handler in routes.items() if is_query(handler)}


def test_reads_are_queries_and_commands_are_not() -> None:
    assert marked(RegistryHandlers(STORE, REQUESTER).routes()) == {
        "sms.source.get",
        "sms.source.known",
        "sms.source.list",
        "sms.source.overview",
    }
    assert marked(CommandResultHandlers(STORE, REQUESTER).routes()) == {
        "sms.command.next",
        "sms.command.next_many",
        "sms.command.results",
    }
    assert marked(TaskLockHandlers(STORE, REQUESTER).routes()) == {"sms.task.get", "sms.task.list"}
    executor = ScriptExecutorHandlers(STORE, REQUESTER, Settings())
    assert marked(executor.routes()) == {
        "coc.script.get",
        "coc.script.list",
        "coc.order.get",
        "coc.order.list",
        "coc.order.batches",
        "coc.order.batch",
        "coc.order.statistics",
    }

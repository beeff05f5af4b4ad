"""The command-result service's handlers.

A result reaches this service after the registry has answered it (services/registry/
handlers.py): `sms.command.record_result` carries the report and what the lifecycle made
of it. It is applied in two idempotent writes, each keyed by an id derived from the
message, so a redelivery after a crash between them finishes the work without doing
either twice: the result is recorded with the registry's outcome, and the command it
answers leaves the server's queue (even when the registry refused the transition: the
agent has answered it).
"""

from __future__ import annotations

import asyncio

from shared.aggregates import apply
from shared.bulk import bulk
from shared.bus import Requests, Unavailable
from shared.consumer import Handler, query, tenant
from shared.contracts.commands import (
    EnqueueCommand,
    NextCommand,
    NextCommandList,
    RecordResult,
    ServerCommandsQuery,
)
from shared.contracts.sources import SourceServerIds, SourceServerRef
from shared.envelope import Incoming, Reply, derived_id, utcnow
from shared.failpoints import late
from shared.store import Query, Store

from . import channels, results


class CommandResultHandlers:
    def __init__(self, store: Store, requester: Requests) -> None:
        self.store = store
        self.requester = requester

    def routes(self) -> dict[str, Handler]:
        return {
            "sms.command.record_result": self.record_result,
            "sms.command.record_result_many": bulk(self.record_result),
            "sms.command.enqueue": self.enqueue,
            "sms.command.next": self.next_command,
            "sms.command.next_many": self.next_many,
            "sms.command.results": self.list_results,
        }

    async def record_result(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        record = incoming.read(RecordResult)
        report = record.report
        result_id = derived_id(incoming.message_id, "result")
        await late("settle")  # a test's: the agent's next polls come before the settle
        # Two documents, independent of each other: written together, they share one
        # commit. Answered is answered: even a result the lifecycle refused ends the
        # pending command, or the agent would be handed it forever.
        await asyncio.gather(
            apply(
                self.store,
                results.COLLECTION,
                incoming.message_id,
                lambda: self.store.get(results.COLLECTION, result_id),
                lambda current: results.record(current, result_id, record, domain_id),
            ),
            apply(
                self.store,
                channels.COLLECTION,
                incoming.message_id,
                lambda: self.store.get(channels.COLLECTION, report.server_id),
                lambda current: channels.settle(current, report.command_name),
            ),
        )
        return Reply(status=200, body={})

    async def enqueue(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        command = incoming.read(EnqueueCommand)
        return await apply(
            self.store,
            channels.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(channels.COLLECTION, command.server_id),
            lambda current: channels.enqueue(current, command, domain_id, utcnow()),
        )

    @query
    async def next_command(self, incoming: Incoming) -> Reply:
        found = await self._channel_of(incoming)
        if isinstance(found, Reply):
            return found
        return Reply(status=200, body=found.next.model_dump(mode="json"))

    @query
    async def next_many(self, incoming: Incoming) -> Reply:
        """The next commands of many servers, each with its channel's version (what the
        gateway's read model keeps): one read of the channels, and one question to the
        registry for the servers that have none."""
        domain_id = tenant(incoming)
        asked = incoming.read(SourceServerIds).server_ids
        found = await self.store.get_many(channels.COLLECTION, asked)
        mine = {i: doc for i, doc in found.items() if doc.domain_id == domain_id}
        others = [i for i in asked if i not in mine]
        known = set(await self._known_servers(others, domain_id)) if others else set()
        listed = NextCommandList(
            commands=[channels.next_of(mine.get(i), i) for i in asked if i in mine or i in known]
        )
        return Reply(status=200, body=listed.model_dump(mode="json"))

    async def _channel_of(self, incoming: Incoming) -> NextCommand | Reply:
        """The server's next command, or the registry's 404 when the tenant has no such server."""
        domain_id = tenant(incoming)
        query = incoming.read(ServerCommandsQuery)
        channel = await self.store.get(channels.COLLECTION, query.server_id)
        if channel is None or channel.domain_id != domain_id:
            if (missing := await self._unknown_server(query.server_id, domain_id)) is not None:
                return missing
            channel = None
        return channels.next_of(channel, query.server_id)

    @query
    async def list_results(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        query = incoming.read(ServerCommandsQuery)
        page = await self.store.find(
            results.COLLECTION,
            Query(
                domain_id=domain_id,
                equals={"server_id": query.server_id},
                limit=query.limit,
                offset=query.offset,
            ),
        )
        if (
            page.total == 0
            and (missing := await self._unknown_server(query.server_id, domain_id)) is not None
        ):
            return missing
        body = {"count": page.total, "command_results": [d.data for d in page.items]}
        return Reply(status=200, body=body)

    async def _known_servers(self, server_ids: list[str], domain_id: str) -> list[str]:
        reply = await self.requester.request(
            "sms.source.known",
            SourceServerIds(server_ids=server_ids).model_dump_json().encode(),
            domain_id=domain_id,
        )
        if reply.status != 200:
            raise Unavailable(f"sms.source.known answered {reply.status}")
        return SourceServerIds.model_validate(reply.body).server_ids

    async def _unknown_server(self, server_id: str, domain_id: str) -> Reply | None:
        """The registry's 404 when the domain has no such server; None when it has."""
        reply = await self.requester.request(
            "sms.source.get",
            SourceServerRef(server_id=server_id).model_dump_json().encode(),
            domain_id=domain_id,
        )
        return reply if reply.status == 404 else None

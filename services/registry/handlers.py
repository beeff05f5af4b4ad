"""The registry's message handlers: decode, load, decide (sources.py), save, reply.

An agent's result comes here first, since the registry is the one writer of the server it
moves: the transition is applied (or refused) and stored, then the result and what the
lifecycle made of it are told to command-result (`sms.command.record_result`), and only
once the broker holds that command is the agent answered 200. Each step is keyed by the
report's message id, so a redelivery after a crash between them finishes the work without
doing any step twice: the transition's duplicate guard answers as before, and
command-result records a result once whichever copy of the command reaches it. A report on
a server of the caller's tenant is answered 200 whatever the lifecycle made of it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from shared.aggregates import Decision, apply, reject, visible
from shared.bulk import BulkItem, bulk, carrying
from shared.bus import Requests
from shared.consumer import Handler, query, tenant
from shared.contracts.commands import RecordResult, ReportResult
from shared.contracts.lifecycle import ResultCause, TaskClaim, TransitionRequest
from shared.contracts.sources import (
    DeleteSources,
    ListSources,
    SourceOverview,
    SourceServerBody,
    SourceServerIds,
    SourceServerRef,
)
from shared.envelope import Incoming, Reply, derived_id, new_id, utcnow
from shared.errors import SmsCode
from shared.store import Document, Page, Query, Store
from shared.telemetry import current_trace_id

from . import sources
from .sources import COLLECTION

RECORD = "sms.command.record_result"
Records = list[BulkItem]  # `list` is also a handler's name below


class RegistryHandlers:
    def __init__(self, store: Store, requester: Requests) -> None:
        self.store = store
        self.requester = requester

    def routes(self) -> dict[str, Handler]:
        return {
            "sms.source.register": self.register,
            "sms.source.register_many": bulk(self.register),
            "sms.source.delete": self.delete,
            "sms.source.delete_many": self.delete_many,
            "sms.source.overview": self.overview,
            "sms.source.get": self.get,
            "sms.source.known": self.known,
            "sms.source.list": self.list,
            "sms.source.transition": self.transition,
            "sms.source.report_result": self.report_result,
            "sms.source.report_result_many": self.report_result_many,
            "sms.source.claim": self.claim,
            "sms.source.release": self.release,
        }

    async def register(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        body = incoming.read(SourceServerBody)
        server_id = new_id()

        async def load() -> Document | None:
            if body.id is not None:
                return await self.store.get(COLLECTION, body.id)
            named = {"hostname": body.hostname, "name": body.name, "ip": body.ip}
            key = sources.identity_key(domain_id, named)
            return None if key is None else await self.store.get_by_key(COLLECTION, key)

        return await apply(
            self.store,
            COLLECTION,
            incoming.message_id,
            load,
            lambda current: sources.register(
                current, body, domain_id, new_id=server_id, now=utcnow()
            ),
        )

    async def _on_server(
        self, incoming: Incoming, server_id: str, decide: Callable[[Document | None], Decision]
    ) -> Reply:
        """Applies `decide` to the server `server_id` (the load–decide–save loop)."""
        return await apply(
            self.store,
            COLLECTION,
            incoming.message_id,
            lambda: self.store.get(COLLECTION, server_id),
            decide,
        )

    async def delete(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        ref = incoming.read(SourceServerRef)
        return await self._on_server(
            incoming,
            ref.server_id,
            lambda current: sources.delete(current, ref.server_id, domain_id, utcnow()),
        )

    async def delete_many(self, incoming: Incoming) -> Reply:
        """Each server follows the single-delete rules. All are checked first: when one
        may not be deleted, the answer is its refusal and none is deleted."""
        domain_id = tenant(incoming)
        request = incoming.read(DeleteSources)
        ids = list(dict.fromkeys(request.ids))
        found = await self.store.get_many(COLLECTION, ids)
        for server_id in ids:
            doc = found.get(server_id)
            if doc is not None and doc.reply_to(derived_id(incoming.message_id, server_id)):
                continue  # deleted by this very message, before a redelivery
            refused = sources.deletion_refused(doc, server_id, domain_id)
            if refused is not None:
                return refused.reply
        for server_id in ids:
            reply = await self._delete_one(incoming, server_id, domain_id)
            if reply.status != 200:
                return reply
        return Reply(status=200, body={})

    async def _delete_one(self, incoming: Incoming, server_id: str, domain_id: str) -> Reply:
        return await apply(
            self.store,
            COLLECTION,
            derived_id(incoming.message_id, server_id),
            lambda: self.store.get(COLLECTION, server_id),
            lambda current: sources.delete(current, server_id, domain_id, utcnow()),
        )

    @query
    async def overview(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        counts = {}
        for state in SourceOverview.model_fields:
            page = await self.store.find(
                COLLECTION, Query(domain_id=domain_id, equals={"state": state}, limit=1)
            )
            counts[state] = page.total
        return Reply(status=200, body=SourceOverview(**counts).model_dump())

    @query
    async def get(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        ref = incoming.read(SourceServerRef)
        doc = visible(await self.store.get(COLLECTION, ref.server_id), domain_id)
        if doc is None:
            return reject(
                SmsCode.SOURCE_NOT_FOUND, f"Source server {ref.server_id} does not exist."
            ).reply
        return Reply(status=200, body=sources.view(doc))

    @query
    async def known(self, incoming: Incoming) -> Reply:
        """Which of these servers the tenant has (one read for them all)."""
        domain_id = tenant(incoming)
        asked = incoming.read(SourceServerIds)
        found = await self.store.get_many(COLLECTION, asked.server_ids)
        ids = [i for i in asked.server_ids if visible(found.get(i), domain_id) is not None]
        return Reply(status=200, body=SourceServerIds(server_ids=ids).model_dump())

    @query
    async def list(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        query = incoming.read(ListSources)
        if query.id is not None:
            doc = visible(await self.store.get(COLLECTION, query.id), domain_id)
            hits = [doc] if doc is not None and sources.matches(doc, query) else []
            page = Page(items=hits[query.offset :][: query.limit], total=len(hits))
        else:
            page = await self.store.find(COLLECTION, sources.list_query(query, domain_id))
        body = {"count": page.total, "source_servers": [sources.view(d) for d in page.items]}
        return Reply(status=200, body=body)

    async def transition(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        request = incoming.read(TransitionRequest)
        return await self._on_server(
            incoming,
            request.server_id,
            lambda current: sources.apply_transition(current, request, domain_id, utcnow()),
        )

    async def report_result(self, incoming: Incoming) -> Reply:
        return await self._report(incoming, lambda records: self._tell(incoming, records))

    async def report_result_many(self, incoming: Incoming) -> Reply | None:
        """Each result as if it came alone, but their records are told in one message once
        every item is applied: the bulk waits for one confirm, and for no other message's."""
        records: Records = []

        async def collect(told: Records) -> None:
            records.extend(told)

        replies = await bulk(lambda item: self._report(item, collect))(incoming)
        if records:
            await self._tell(incoming, records)
        return replies

    async def _report(
        self, incoming: Incoming, tell: Callable[[Records], Awaitable[None]]
    ) -> Reply:
        domain_id = tenant(incoming)
        report = incoming.read(ReportResult)
        received_at = utcnow()
        reason = str(report.result_detail)[:1024] if report.result == "fail" else None
        request = TransitionRequest(
            server_id=report.server_id,
            cause=ResultCause(
                command_name=report.command_name, result=report.result, reason=reason
            ),
        )
        outcome = await self._on_server(
            incoming,
            report.server_id,
            lambda current: sources.apply_transition(current, request, domain_id, received_at),
        )
        if outcome.status == 404:
            return outcome
        record = RecordResult(
            report=report, outcome=outcome, received_at=received_at, trace_id=current_trace_id()
        )
        item = BulkItem(
            key=report.server_id,
            body=record.model_dump(mode="json"),
            message_id=derived_id(incoming.message_id, "record"),
        )
        await tell([item])
        # A report is a fact: kept, it is answered 200 whether or not the lifecycle took
        # it (its record and the record's event say which, and why).
        return Reply(status=200, body={})

    async def _tell(self, incoming: Incoming, records: Records) -> None:
        """Tells command-result to record these results, and returns once the broker has
        them: from then on they are kept whatever happens to this process."""
        key, body, message_id = carrying(RECORD, records)
        await self.requester.tell(key, body, domain_id=tenant(incoming), message_id=message_id)

    async def claim(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        request = incoming.read(TaskClaim)
        return await self._on_server(
            incoming, request.server_id, lambda current: sources.claim(current, request, domain_id)
        )

    async def release(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        request = incoming.read(TaskClaim)
        return await self._on_server(
            incoming,
            request.server_id,
            lambda current: sources.release(current, request, domain_id),
        )

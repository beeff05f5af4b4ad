"""The script library (COC CreateScript, ShowScript, ListScripts, DeleteScript): the
handlers; the rules are in `scripts.py`."""

from __future__ import annotations

from shared.aggregates import apply, visible
from shared.consumer import query, tenant
from shared.contracts.scripts import ScriptBody, ScriptPage, ScriptRef
from shared.envelope import Incoming, Reply, derived_id, utcnow
from shared.store import Document, Query, Store

from . import scripts


class ScriptLibrary:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def script(self, script_uuid: str, domain_id: str) -> Document | None:
        return visible(await self.store.get(scripts.COLLECTION, script_uuid), domain_id)

    async def create_script(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        body = incoming.read(ScriptBody)
        script_uuid = derived_id(incoming.message_id, "script")
        return await apply(
            self.store,
            scripts.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(scripts.COLLECTION, script_uuid),
            lambda current: scripts.create(current, script_uuid, body, domain_id, utcnow()),
        )

    @query
    async def get_script(self, incoming: Incoming) -> Reply:
        ref = incoming.read(ScriptRef)
        script = await self.script(ref.script_uuid, tenant(incoming))
        if script is None:
            return scripts.not_found(ref.script_uuid)
        return Reply(status=200, body={"data": scripts.view(script)})

    @query
    async def list_scripts(self, incoming: Incoming) -> Reply:
        page = incoming.read(ScriptPage)
        found = await self.store.find(
            scripts.COLLECTION,
            Query(domain_id=tenant(incoming), limit=page.limit, offset=page.offset),
        )
        body = {"data": [scripts.view(d) for d in found.items], "total": found.total}
        return Reply(status=200, body={"data": body})

    async def delete_script(self, incoming: Incoming) -> Reply:
        domain_id = tenant(incoming)
        ref = incoming.read(ScriptRef)
        return await apply(
            self.store,
            scripts.COLLECTION,
            incoming.message_id,
            lambda: self.store.get(scripts.COLLECTION, ref.script_uuid),
            lambda current: scripts.delete(current, ref.script_uuid, domain_id),
        )

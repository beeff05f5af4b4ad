"""Asking command-result for the next commands the read model cannot answer, many at once.

A gateway that has just started knows no server, and a fleet polls every few seconds:
thousands of first polls arrive together. Asked one by one, each would cost a broker
round trip and two reads; instead the polls of one tenant waiting at the same moment
become one `sms.command.next_many` (up to 500 servers each), and what it answers is
learned by the read model, so the next polls are answered without asking.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.bus import Requester, Unavailable
from shared.coalescer import Coalescer
from shared.contracts.commands import NextCommandList
from shared.contracts.sources import MAX_LOOKUP, SourceServerIds

from .next_commands import NextCommands


class NextCommandLookups:
    def __init__(self, requester: Requester, known: NextCommands) -> None:
        self.requester = requester
        self.known = known
        self._batches = Coalescer[str, bytes | None](self._ask, _held)

    async def next_for(self, server_id: str, domain_id: str) -> bytes | None:
        """The poll's answer, or None when the tenant has no such server."""
        return await self._batches.submit(domain_id, server_id)

    async def _ask(self, domain_id: str, server_ids: list[str]) -> Sequence[bytes | None]:
        unique = list(dict.fromkeys(server_ids))
        chunks = [unique[i : i + MAX_LOOKUP] for i in range(0, len(unique), MAX_LOOKUP)]
        generation, asked = self.known.generation, self.known.answers
        answers: dict[str, bytes] = {}
        for listed in await asyncio.gather(*(self._ask_one(domain_id, c) for c in chunks)):
            for found in listed.commands:
                next_command = found.next.model_dump(mode="json")
                answers[found.server_id] = self.known.answer_of(found.server_id, next_command)
                if self.known.generation == generation:
                    self.known.learn(
                        found.server_id,
                        domain_id,
                        found.version,
                        next_command,
                        confirmed=True,
                        asked=asked,
                    )
        return [answers.get(server_id) for server_id in server_ids]

    async def _ask_one(self, domain_id: str, server_ids: list[str]) -> NextCommandList:
        body = SourceServerIds(server_ids=server_ids).model_dump_json().encode()
        reply = await self.requester.request("sms.command.next_many", body, domain_id=domain_id)
        if reply.status != 200:
            raise Unavailable(f"sms.command.next_many answered {reply.status}")
        return NextCommandList.model_validate(reply.body)


def _held(exc: BaseException) -> BaseException:
    """What the other polls of a batch that failed get: the service is unavailable (503)."""
    if isinstance(exc, Unavailable):
        return type(exc)(str(exc))  # Overloaded stays Overloaded
    return Unavailable(f"asking failed: {exc!r}")

"""The agents' next commands as this gateway process knows them: a read model (CQRS), pure.

Polling for the next command is the hottest call a fleet makes, and a query changes
nothing, so the gateway answers it from here instead of asking command-result through
the broker every time. The model is kept from two sources:

- the command channel's events (`command.queued`, `command.completed`), each carrying
  the head it left and, in its envelope, the channel's version; the newest version wins,
  so redelivered or reordered events never take the model back;
- command-result's own answer (`sms.command.channel`), asked when the model cannot
  answer: the first poll of a server, a poll after that server's agent reported a
  result through this process, or after the model was reset.

Only an entry the owner *confirmed* (it said the server exists in that tenant) answers a
poll; an event alone never proves a server exists. A deleted server is forgotten for
good: no later event or answer brings it back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared import jsoncodec


@dataclass
class _Entry:
    domain_id: str
    version: int
    body: bytes  # the poll's answer, encoded once
    confirmed: bool


def encode(next_command: dict[str, Any]) -> bytes:
    return jsoncodec.dump_bytes(
        {
            "command_name": next_command.get("command_name", ""),
            "command_param": next_command.get("command_param"),
        }
    )


class NextCommands:
    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._deleted: set[str] = set()
        # Counts resets: an answer asked for before the last one may be older than an event
        # the model missed, so it is not learned (lookups.py).
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, server_id: str, domain_id: str) -> bytes | None:
        """The poll's answer, or None when only the owner can give it."""
        entry = self._entries.get(server_id)
        if entry is None or not entry.confirmed or entry.domain_id != domain_id:
            return None
        return entry.body

    def learn(
        self,
        server_id: str,
        domain_id: str,
        version: int,
        next_command: dict[str, Any],
        *,
        confirmed: bool,
    ) -> None:
        """Takes what an event (`confirmed=False`) or the owner's answer (`True`) says."""
        if server_id in self._deleted:
            return
        entry = self._entries.get(server_id)
        if entry is None or entry.domain_id != domain_id:
            if not confirmed and entry is not None:
                return  # an event of another tenant never replaces a confirmed entry
            self._entries[server_id] = _Entry(domain_id, version, encode(next_command), confirmed)
            return
        if version > entry.version or (version == entry.version and confirmed):
            entry.version, entry.body = version, encode(next_command)
        entry.confirmed = entry.confirmed or confirmed

    def doubt(self, server_id: str) -> None:
        """The next poll asks the owner: a result for this server was just answered 200 here,
        and the event that ends its command may not have arrived yet."""
        entry = self._entries.get(server_id)
        if entry is not None:
            entry.confirmed = False

    def forget(self, server_id: str) -> None:
        """The server was deleted: polls for it are the owner's to answer (404)."""
        self._entries.pop(server_id, None)
        self._deleted.add(server_id)

    def reset(self) -> None:
        """Events may have been missed: only the owners' answers count again."""
        self._entries.clear()
        self.generation += 1

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        """The events this model follows, each with what it does with one."""
        return {
            "command.queued": self._channel_changed,
            "command.completed": self._channel_changed,
            "source.deleted": lambda event: self.forget(str(event["aggregate_id"])),
        }

    def _channel_changed(self, event: dict[str, Any]) -> None:
        server_id = str(event["aggregate_id"])
        next_command = event["data"].get("next")
        if next_command is None:  # an earlier release's event: it does not say
            self.doubt(server_id)
            return
        version = int(event["aggregate_version"])
        self.learn(server_id, str(event["domain_id"]), version, next_command, confirmed=False)

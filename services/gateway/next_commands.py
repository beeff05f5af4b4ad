"""The agents' next commands as this gateway process knows them: a read model (CQRS), pure.

Polling for the next command is the hottest call a fleet makes, and a query changes
nothing, so the gateway answers it from here instead of asking command-result through
the broker every time. The model is kept from two sources:

- the command channel's events (`command.queued`, `command.completed`), each carrying
  the head it left and, in its envelope, the channel's version; the newest version wins,
  so redelivered or reordered events never take the model back;
- command-result's own answer (`sms.command.next_many`), asked when the model cannot
  answer: the first poll of a server, or after the model was reset;
- the results this process relayed: the registry answers a result before command-result
  has taken the command off the queue, so the model stops handing out the command a
  result answered (the poll gets no command) until an event newer than it says what is
  next.

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
    command_name: str = ""  # the head's, "" when none
    answered: bool = False  # a result for the head was relayed: only a newer version counts


def encode(next_command: dict[str, Any]) -> bytes:
    return jsoncodec.dump_bytes(
        {
            "command_name": next_command.get("command_name", ""),
            "command_param": next_command.get("command_param"),
        }
    )


NOTHING = encode({})


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
        name = str(next_command.get("command_name") or "")
        if entry is None or entry.domain_id != domain_id:
            if not confirmed and entry is not None:
                return  # an event of another tenant never replaces a confirmed entry
            body = encode(next_command)
            self._entries[server_id] = _Entry(domain_id, version, body, confirmed, name)
            return
        newer = version > entry.version
        if newer or (version == entry.version and confirmed and not entry.answered):
            entry.version, entry.body, entry.command_name = version, encode(next_command), name
            entry.answered = False
        entry.confirmed = entry.confirmed or confirmed

    def answered(self, server_id: str, command_name: str) -> None:
        """A result for this server's `command_name` was just answered 200 here. The event
        that takes the command off its queue comes a hop later: until then, polls get no
        command rather than the one answered (or, when the model does not hold that command
        as the head, ask the owner)."""
        entry = self._entries.get(server_id)
        if entry is None:
            return
        if entry.confirmed and entry.command_name == command_name:
            entry.body, entry.command_name, entry.answered = NOTHING, "", True
        else:
            entry.confirmed = False

    def doubt(self, server_id: str) -> None:
        """The next poll asks the owner: an earlier release's event did not say what is next."""
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

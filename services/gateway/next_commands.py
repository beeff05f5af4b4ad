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
  has taken the command off the queue, so the command a result answered is *held*: no
  poll is handed it — whether the model or the owner says it is the head — until the
  `command.completed` of that command arrives, a `command.queued` of that name newer
  than what the model knew then (a result can come before its command was queued, and
  then completes nothing), or `HOLD_SECONDS` pass. A model that knew nothing of the
  channel then cannot tell a command queued after the result from one whose event is
  merely late, so such a hold takes its version from the owner's next answer (one asked
  after the hold was made: an answer already on its way may have been read before the
  command was queued), and no `command.queued` ends it before that.

Only an entry the owner *confirmed* (it said the server exists in that tenant) answers a
poll; an event alone never proves a server exists. A deleted server is forgotten for
good: no later event or answer brings it back.
"""

from __future__ import annotations

import time
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
    completed: str = ""  # the command whose completion was the last change learned


@dataclass(frozen=True)
class _Hold:
    after: int  # the channel's version the model knew when the result was answered
    until: float  # the clock's time it ends at whatever happens
    made: int  # the model's `answers` once it was made


UNKNOWN = -1  # a hold's `after` when the model knew nothing of the channel


# Longer than command-result ever takes to settle a result it is up for (milliseconds), so a
# held command is not handed out again unless command-result is down that long.
HOLD_SECONDS = 30.0


def encode(next_command: dict[str, Any]) -> bytes:
    return jsoncodec.dump_bytes(
        {
            "command_name": next_command.get("command_name", ""),
            "command_param": next_command.get("command_param"),
        }
    )


NOTHING = encode({})


class NextCommands:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: dict[str, _Entry] = {}
        self._held: dict[str, dict[str, _Hold]] = {}  # server → command name → its hold
        self._clock = clock
        self._deleted: set[str] = set()
        # Counts resets: an answer asked for before the last one may be older than an event
        # the model missed, so it is not learned (lookups.py).
        self.generation = 0
        # Counts the results answered here: an owner's answer asked for before a hold was
        # made does not date it (`_date_holds`).
        self.answers = 0

    def __len__(self) -> int:
        return len(self._entries)

    def answer(self, server_id: str, domain_id: str) -> bytes | None:
        """The poll's answer, or None when only the owner can give it."""
        entry = self._entries.get(server_id)
        if entry is None or not entry.confirmed or entry.domain_id != domain_id:
            return None
        return NOTHING if self.holds(server_id, entry.command_name) else entry.body

    def answer_of(self, server_id: str, next_command: dict[str, Any]) -> bytes:
        """The poll's answer when the owner says `next_command` is the head."""
        if self.holds(server_id, str(next_command.get("command_name") or "")):
            return NOTHING
        return encode(next_command)

    def holds(self, server_id: str, command_name: str) -> bool:
        hold = self._held.get(server_id, {}).get(command_name)
        if hold is not None and hold.until <= self._clock():
            self._release(server_id, command_name)
            return False
        return hold is not None

    def learn(
        self,
        server_id: str,
        domain_id: str,
        version: int,
        next_command: dict[str, Any],
        *,
        confirmed: bool,
        asked: int | None = None,
    ) -> None:
        """Takes what an event (`confirmed=False`) or the owner's answer (`True`) says;
        `asked` is `answers` when the owner was asked (None: after every result so far)."""
        if server_id in self._deleted:
            return
        if confirmed:
            self._date_holds(server_id, version, self.answers if asked is None else asked)
        entry = self._entries.get(server_id)
        name = str(next_command.get("command_name") or "")
        if entry is None or entry.domain_id != domain_id:
            if not confirmed and entry is not None:
                return  # an event of another tenant never replaces a confirmed entry
            body = encode(next_command)
            self._entries[server_id] = _Entry(domain_id, version, body, confirmed, name)
            return
        if version > entry.version or (version == entry.version and confirmed):
            entry.version, entry.body, entry.command_name = version, encode(next_command), name
            entry.completed = ""
        entry.confirmed = entry.confirmed or confirmed

    def answered(self, server_id: str, command_name: str) -> None:
        """A result for this server's `command_name` was just answered 200 here. The event
        that takes the command off its queue comes a hop later: until then the command is
        held (no poll is handed it), and when the model does not hold it as the head, the
        next poll asks the owner."""
        self.answers += 1
        entry = self._entries.get(server_id)
        # When its completion overtook this answer, a hold would stop the next one instead.
        if entry is None or entry.completed != command_name:
            after = entry.version if entry else UNKNOWN
            hold = _Hold(after, self._clock() + HOLD_SECONDS, self.answers)
            self._held.setdefault(server_id, {})[command_name] = hold
        if entry is not None and entry.command_name != command_name:
            entry.confirmed = False

    def doubt(self, server_id: str) -> None:
        """The next poll asks the owner: an earlier release's event did not say what is next."""
        entry = self._entries.get(server_id)
        if entry is not None:
            entry.confirmed = False

    def forget(self, server_id: str) -> None:
        """The server was deleted: polls for it are the owner's to answer (404)."""
        self._entries.pop(server_id, None)
        self._held.pop(server_id, None)
        self._deleted.add(server_id)

    def reset(self) -> None:
        """Events may have been missed: only the owners' answers count again (the holds
        stay: what this process answered is still true)."""
        self._entries.clear()
        self.generation += 1

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], None]]:
        """The events this model follows, each with what it does with one."""
        return {
            "command.queued": self._queued,
            "command.completed": self._completed,
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

    def _queued(self, event: dict[str, Any]) -> None:
        server_id, name = _server_and_command(event)
        hold = self._held.get(server_id, {}).get(name)
        if hold is not None and UNKNOWN < hold.after < int(event["aggregate_version"]):
            self._release(server_id, name)  # queued after the result it held for
        self._channel_changed(event)

    def _completed(self, event: dict[str, Any]) -> None:
        server_id, name = _server_and_command(event)
        self._release(server_id, name)
        entry = self._entries.get(server_id)
        before = entry.version if entry is not None else -1
        self._channel_changed(event)
        entry = self._entries.get(server_id)
        if entry is not None and entry.version > before:
            entry.completed = name

    def _date_holds(self, server_id: str, version: int, asked: int) -> None:
        """The owner's answer, asked for after this process answered the results it holds
        for, dates the holds made when the model knew nothing of the channel."""
        held = self._held.get(server_id, {})
        for name, hold in held.items():
            if hold.after == UNKNOWN and hold.made <= asked:
                held[name] = _Hold(version, hold.until, hold.made)

    def _release(self, server_id: str, command_name: str) -> None:
        held = self._held.get(server_id)
        if held is not None:
            held.pop(command_name, None)
            if not held:
                del self._held[server_id]


def _server_and_command(event: dict[str, Any]) -> tuple[str, str]:
    """The server of a channel's event, and the command it queued or completed."""
    return str(event["aggregate_id"]), str(event["data"].get("command_name"))

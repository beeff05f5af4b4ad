"""The source server's migration lifecycle: one explicit transition table, pure.

Two kinds of cause move a server: a task action (start, stop, restart, test,
cutover) and the result an agent reports for a command (START, SYNC, STOP, …).
`transition()` looks the cause up in the table; a cause the table does not list
for the current state is refused and changes nothing. A failed migration command
moves an active server to `error`, keeping the reason. `mermaid()` draws the
table; the README's diagram is checked against it by a test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from shared.contracts.lifecycle import ActionCause, ResultCause
from shared.contracts.sources import MigrationCycle, SourceState

STATES: tuple[SourceState, ...] = get_args(SourceState)
# The states a register may create a server in (the agent's environment check passed or not).
INITIAL: frozenset[SourceState] = frozenset({"waiting", "unavailable"})
TERMINAL: frozenset[SourceState] = frozenset({"finished", "deleting"})
# States in which an agent is working: a failed migration command here means `error`.
ACTIVE: frozenset[SourceState] = frozenset(
    {"initialize", "replicate", "syncing", "stopping", "cloning", "cutovering"}
)
MIGRATION_COMMANDS = frozenset({"START", "STOP", "SYNC"})
# Commands that never move the lifecycle; their results are only recorded.
HOUSEKEEPING_COMMANDS = frozenset({"UPLOAD_LOG", "RSET_LOG_ACL"})


@dataclass(frozen=True)
class Step:
    to: SourceState
    cycle: MigrationCycle | None


# (task operation, from state) -> step
ACTIONS: dict[tuple[str, SourceState], Step] = {
    ("start", "waiting"): Step("initialize", "checking"),
    ("start", "stopped"): Step("initialize", "checking"),
    ("start", "error"): Step("initialize", "checking"),
    ("restart", "stopped"): Step("initialize", "checking"),
    ("restart", "error"): Step("initialize", "checking"),
    ("stop", "initialize"): Step("stopping", None),
    ("stop", "replicate"): Step("stopping", None),
    ("stop", "syncing"): Step("stopping", None),
    ("stop", "cloning"): Step("stopping", None),
    ("test", "syncing"): Step("cloning", "syncing"),
    ("cutover", "syncing"): Step("cutovering", "cutovering"),
}

# (command, from state) -> step, for a successful result
SUCCESSES: dict[tuple[str, SourceState], Step] = {
    ("START", "initialize"): Step("replicate", "replicating"),
    ("SYNC", "replicate"): Step("syncing", "syncing"),
    ("SYNC", "syncing"): Step("syncing", "syncing"),
    ("SYNC", "cloning"): Step("syncing", "syncing"),
    ("SYNC", "cutovering"): Step("finished", "cutovered"),
    ("STOP", "stopping"): Step("stopped", None),
    ("DELETE", "waiting"): Step("deleting", None),
    ("DELETE", "unavailable"): Step("deleting", None),
    ("DELETE", "stopped"): Step("deleting", None),
    ("DELETE", "error"): Step("deleting", None),
    ("DELETE", "finished"): Step("deleting", None),
}


@dataclass(frozen=True)
class TransitionRefused:
    reason: str


def transition(
    state: SourceState, cycle: MigrationCycle | None, cause: ActionCause | ResultCause
) -> Step | TransitionRefused:
    """Where `cause` takes a server in `state`; `TransitionRefused` when the table forbids it."""
    if isinstance(cause, ActionCause):
        step = ACTIONS.get((cause.operation, state))
        return step or TransitionRefused(
            f"task action {cause.operation} is not allowed in state {state}"
        )
    if cause.command_name in HOUSEKEEPING_COMMANDS:
        return Step(state, cycle)
    if cause.result == "fail":
        if cause.command_name in MIGRATION_COMMANDS and state in ACTIVE:
            return Step("error", cycle)
        return TransitionRefused(f"a failed {cause.command_name} is not expected in state {state}")
    step = SUCCESSES.get((cause.command_name, state))
    if step is None:
        return TransitionRefused(
            f"a successful {cause.command_name} is not expected in state {state}"
        )
    return Step(step.to, step.cycle or cycle)


def edges() -> list[tuple[SourceState, SourceState, str]]:
    """Every state change the table allows, as (from, to, label)."""
    found: list[tuple[SourceState, SourceState, str]] = []
    for (operation, source), step in ACTIONS.items():
        found.append((source, step.to, operation))
    for (command, source), step in SUCCESSES.items():
        if step.to != source:
            found.append((source, step.to, f"{command} ok"))
    for source in STATES:
        if source in ACTIVE:
            found.append((source, "error", "START/STOP/SYNC fail"))
    return found


def mermaid() -> str:
    lines = [
        "stateDiagram-v2",
        *(f"    [*] --> {state} : register" for state in sorted(INITIAL, reverse=True)),
    ]
    lines += [f"    {a} --> {b} : {label}" for a, b, label in edges()]
    lines += ["    finished --> [*]", "    deleting --> [*]"]
    return "\n".join(lines)

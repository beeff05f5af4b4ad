"""The lifecycle table, driven by hypothesis, and the README's diagram kept equal to it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from hypothesis import given
from hypothesis import strategies as st

from services.registry import lifecycle
from shared.contracts.lifecycle import ActionCause, CommandName, ResultCause, TaskOperation
from shared.contracts.sources import MigrationCycle, SourceState

README = (Path(__file__).parents[2] / "README.md").read_text()

causes = st.one_of(
    st.builds(
        ResultCause,
        command_name=st.sampled_from(get_args(CommandName)),
        result=st.sampled_from(["success", "fail"]),
        reason=st.none() | st.text(max_size=20),
    ),
    st.builds(
        ActionCause, operation=st.sampled_from(get_args(TaskOperation)), task_id=st.just("t")
    ),
)


def test_the_table_speaks_only_of_known_states() -> None:
    assert set(lifecycle.STATES) == set(get_args(SourceState))
    for (_, source), step in {**lifecycle.ACTIONS, **lifecycle.SUCCESSES}.items():
        assert source in lifecycle.STATES and step.to in lifecycle.STATES
        assert step.cycle is None or step.cycle in get_args(MigrationCycle)


@given(st.sampled_from(lifecycle.STATES), st.lists(causes, max_size=30))
def test_random_causes_keep_the_invariants(start: SourceState, sequence: list[object]) -> None:
    state: SourceState = start
    cycle: MigrationCycle | None = None
    for cause in sequence:
        assert isinstance(cause, ResultCause | ActionCause)
        step = lifecycle.transition(state, cycle, cause)
        if isinstance(step, lifecycle.TransitionRefused):
            continue
        assert step.to in lifecycle.STATES
        if step.to != state:
            assert (state, step.to) in {(a, b) for a, b, _ in lifecycle.edges()}
            if state in lifecycle.TERMINAL:
                # Terminal states only leave where the table says so: finished may be deleted.
                assert (state, step.to) == ("finished", "deleting")
        state, cycle = step.to, step.cycle


@given(st.sampled_from(sorted(lifecycle.ACTIVE)), st.sampled_from(["START", "STOP", "SYNC"]))
def test_a_failed_migration_command_means_error(state: SourceState, command: str) -> None:
    cause = ResultCause(command_name=command, result="fail", reason="disk full")  # type: ignore[arg-type]
    step = lifecycle.transition(state, "replicating", cause)
    assert isinstance(step, lifecycle.Step) and step.to == "error"


@given(st.sampled_from(lifecycle.STATES), st.sampled_from(["UPLOAD_LOG", "RSET_LOG_ACL"]))
def test_housekeeping_commands_never_move_the_server(state: SourceState, command: str) -> None:
    for result in ("success", "fail"):
        cause = ResultCause(command_name=command, result=result)  # type: ignore[arg-type]
        assert lifecycle.transition(state, None, cause) == lifecycle.Step(state, None)


def test_deleting_is_terminal() -> None:
    for cause in [ActionCause(operation=op, task_id="t") for op in get_args(TaskOperation)]:
        assert isinstance(
            lifecycle.transition("deleting", None, cause), lifecycle.TransitionRefused
        )


def test_the_readme_diagram_is_the_table() -> None:
    block = re.search(r"```mermaid\n(stateDiagram-v2.*?)\n```", README, re.S)
    assert block is not None, "README has no lifecycle diagram"
    assert block.group(1).strip() == lifecycle.mermaid().strip()

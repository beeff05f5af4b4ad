"""How deep a body may nest, read from its raw text."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from shared.contracts.nesting import MAX_DEPTH, nests_deeper


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def test_the_limit_itself_is_allowed_one_more_is_not() -> None:
    assert not nests_deeper(nested(MAX_DEPTH))
    assert nests_deeper(nested(MAX_DEPTH + 1))
    assert nests_deeper("[" * 65_000)  # unbalanced: still too deep, never parsed


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[" * 1000, "b": '\\"[[[' * 100})
    assert not nests_deeper(text)


@given(st.integers(min_value=0, max_value=150))
def test_objects_and_arrays_count_alike(depth: int) -> None:
    text = '{"a":' * depth + "[1]" + "}" * depth
    assert nests_deeper(text) == (depth + 1 > MAX_DEPTH)

"""Access-key file lines are taken strictly: nothing is coerced into wider access."""

from __future__ import annotations

import json

import pytest
from structlog.testing import capture_logs

from shared.access_keys import parse

GOOD = {"ak": "AK1", "sk": "secret-value", "domain_id": "d1", "actions": ["sms:*"]}


def line(**changes: object) -> str:
    return json.dumps({**GOOD, **changes})


def test_a_well_formed_line_is_a_key() -> None:
    key = parse(line(project_ids=["p1"], enabled=False))["AK1"]
    assert (key.actions, key.project_ids, key.enabled) == (("sms:*",), ("p1",), False)


@pytest.mark.parametrize(
    "changes",
    [
        {"actions": "sms:*"},  # a string where a list is expected: not ('s', 'm', 's', …)
        {"enabled": "false"},  # a string for a boolean: not True
        {"enabled": 0},
        {"project_ids": "p1"},
        {"domain_id": 7},
        {"actions": ["sms:*", 3]},
        {"enable": False},  # a misspelt field must not leave the key enabled
        {"sk": ""},
    ],
    ids=repr,
)
def test_a_line_of_the_wrong_shape_is_refused_and_logged_by_number(
    changes: dict[str, object],
) -> None:
    text = "# keys\n" + line(ak="OK") + "\n" + line(**changes) + "\n"
    with capture_logs() as logs:
        keys = parse(text)
    assert list(keys) == ["OK"]
    [warning] = [entry for entry in logs if entry["event"] == "access_keys.bad_line"]
    assert warning["line"] == 3
    assert "secret-value" not in json.dumps(logs)

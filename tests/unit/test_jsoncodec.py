import json

import pytest

from shared import jsoncodec


@pytest.mark.parametrize(
    "value",
    [
        {"name": "host-1", "disks": [{"size": 10**12}], "ratio": 0.5, "ok": True, "none": None},
        {"big": 2**70, "text": "ünïcode \u2028"},  # past 64 bits: the standard library's turn
        [],
    ],
)
def test_what_it_writes_both_read_back_alike(value: object) -> None:
    text = jsoncodec.dumps(value)
    assert jsoncodec.loads(text) == value
    assert json.loads(text) == value


def test_bad_json_is_still_a_value_error() -> None:
    with pytest.raises(ValueError, match="line 1"):
        jsoncodec.loads("{not json")

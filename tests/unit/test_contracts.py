"""The register body: the seed's example is accepted, every limit of its tables is enforced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.consumer import without_values
from shared.contracts import sources
from shared.contracts.catalog import json_schemas
from shared.contracts.scripts import ScriptExecuteInputParam

EXAMPLE = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "sms-register-example.json").read_text()
)


def test_the_seed_example_is_accepted_and_keeps_what_it_sent() -> None:
    body = sources.SourceServerBody.model_validate(EXAMPLE)
    dumped = body.model_dump(mode="json", exclude_unset=True, by_alias=True)
    assert dumped["btrfs_list"][0]["subvolumn"][0]["subvol_name"] == "@"
    assert dumped["btrfs_list"][0]["size"] == "3.30GiB"
    assert dumped["volume_groups"][0]["logical_volumes"][0]["inode_size"] == "256"
    assert dumped["disks"][2]["device_use"] == "VOLUME_GROUP"


def test_the_tables_spelling_subvolume_is_accepted_too() -> None:
    btrfs = dict(EXAMPLE["btrfs_list"][0])
    btrfs["subvolume"] = btrfs.pop("subvolumn")
    parsed = sources.BtrfsFileSystem.model_validate(btrfs)
    assert len(parsed.subvolumn) == len(EXAMPLE["btrfs_list"][0]["subvolumn"])


def _leaves(
    schema: dict[str, Any], defs: dict[str, Any], path: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every property of the schema, nested models included, as (path, schema of one type)."""
    for name, prop in schema.get("properties", {}).items():
        for option in prop.get("anyOf", [prop]):
            if "$ref" in option:
                yield from _leaves(defs[option["$ref"].split("/")[-1]], defs, f"{path}{name}.")
            elif option.get("type") == "array" and "$ref" in option.get("items", {}):
                yield f"{path}{name}", option
                ref = option["items"]["$ref"].split("/")[-1]
                yield from _leaves(defs[ref], defs, f"{path}{name}[].")
            elif option.get("type") != "null":
                yield f"{path}{name}", option


SCHEMA = sources.SourceServerBody.model_json_schema()
LEAVES = list(_leaves(SCHEMA, SCHEMA["$defs"]))


@pytest.mark.parametrize(
    ("path", "schema"), LEAVES, ids=[f"{p}:{s.get('type')}" for p, s in LEAVES]
)
def test_every_field_carries_the_tables_limit(path: str, schema: dict[str, Any]) -> None:
    kind = schema.get("type")
    if kind == "string" and "enum" not in schema:
        assert schema.get("maxLength") in (255, 256, 1024), path
    elif kind in ("integer", "number"):
        assert "minimum" in schema and "maximum" in schema, path
    elif kind == "array":
        assert schema.get("maxItems") in (255, 65535), path
    else:
        assert kind == "boolean" or "enum" in schema, path


TOP_STRINGS = [
    p for p, s in LEAVES if "." not in p and s.get("type") == "string" and "enum" not in s
]


@pytest.mark.parametrize("name", TOP_STRINGS)
def test_a_string_over_its_limit_is_refused_naming_the_field(name: str) -> None:
    sources.SourceServerBody.model_validate({name: "x" * 255})
    with pytest.raises(ValidationError) as error:
        sources.SourceServerBody.model_validate({name: "x" * 256})
    assert error.value.errors()[0]["loc"][0] == name


def test_every_command_and_event_has_a_json_schema() -> None:
    schemas = json_schemas()
    assert "sms.source.register" in schemas["commands"]
    assert {"source.registered", "source.updated", "source.deleted"} <= set(schemas["events"])
    assert schemas["envelope"]["event"]["required"]


def test_a_malformed_body_is_described_without_the_values_it_held() -> None:
    with pytest.raises(ValidationError) as caught:
        ScriptExecuteInputParam.model_validate(
            {"param_name": "secret", "param_value": "hunter2" * 200, "param_order": 1}
        )
    reason = without_values(caught.value)
    assert "param_value" in reason and "hunter2" not in reason

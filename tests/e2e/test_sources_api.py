"""`POST /v3/sources` and its reads, end to end: gateway → RabbitMQ → registry → SQLite."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import SECRET, auth, token
from tests.e2e.helpers import assert_sms_error, ok, register
from tests.e2e.helpers import server_body as server

EXAMPLE = (Path(__file__).parents[1] / "fixtures" / "sms-register-example.json").read_bytes()


def assert_contains(got: Any, sent: Any, path: str = "") -> None:
    """Every field that was sent comes back with the same value."""
    if isinstance(sent, dict):
        assert isinstance(got, dict), path
        for key, value in sent.items():
            assert key in got, f"{path}.{key} missing"
            assert_contains(got[key], value, f"{path}.{key}")
    elif isinstance(sent, list):
        assert isinstance(got, list) and len(got) == len(sent), path
        for i, (g, s) in enumerate(zip(got, sent, strict=True)):
            assert_contains(g, s, f"{path}[{i}]")
    else:
        assert got == sent, f"{path}: {got!r} != {sent!r}"


async def count_named(client: httpx.AsyncClient, name: str, domain: str = "domain-a") -> int:
    response = await client.get("/v3/sources", params={"name": name}, headers=auth(domain))
    assert response.status_code == 200, response.text
    return sum(1 for s in response.json()["source_servers"] if s.get("name") == name)


async def test_seed_example_byte_for_byte_registers_and_reads_back(
    client: httpx.AsyncClient,
) -> None:
    headers = {**auth("domain-seed"), "Content-Type": "application/json"}
    response = await client.post("/v3/sources", content=EXAMPLE, headers=headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"id"}
    server_id = response.json()["id"]

    shown = await client.get(f"/v3/sources/{server_id}", headers=auth("domain-seed"))
    assert shown.status_code == 200
    assert_contains(shown.json(), json.loads(EXAMPLE))
    assert shown.json()["id"] == server_id
    assert shown.json()["state"] == "waiting"


async def test_registering_the_same_host_again_updates_it(client: httpx.AsyncClient) -> None:
    body = server()
    first = await register(client, body)
    second = await register(
        client, {**body, "cpu_quantity": 8, "hostname": body["hostname"].upper()}
    )
    assert first == second
    assert await count_named(client, body["name"]) == 1
    shown = (await client.get(f"/v3/sources/{first}", headers=auth())).json()
    assert shown["cpu_quantity"] == 8
    assert shown["version"] == 2


async def test_registering_with_an_id_updates_that_server(client: httpx.AsyncClient) -> None:
    server_id = await register(client, server())
    again = await register(client, {"id": server_id, "agent_version": "2.2.2", "memory": 1024})
    assert again == server_id
    shown = (await client.get(f"/v3/sources/{server_id}", headers=auth())).json()
    assert (shown["agent_version"], shown["memory"]) == ("2.2.2", 1024)


async def test_registering_with_an_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v3/sources", json={"id": "nope", "memory": 1}, headers=auth())
    assert_sms_error(response, 404, "SMS.2001")


async def test_update_onto_another_servers_identity_is_409(client: httpx.AsyncClient) -> None:
    taken = server()
    await register(client, taken)
    other = await register(client, server())
    response = await client.post(
        "/v3/sources",
        json={"id": other, "hostname": taken["hostname"], "name": taken["name"]},
        headers=auth(),
    )
    assert_sms_error(response, 409, "SMS.2002")


async def test_state_cannot_be_changed_by_register(client: httpx.AsyncClient) -> None:
    server_id = await register(client, server())
    response = await client.post(
        "/v3/sources", json={"id": server_id, "state": "finished"}, headers=auth()
    )
    assert_sms_error(response, 400, "SMS.2003")


@pytest.mark.parametrize(
    "fields",
    [{"state": "finished"}, {"state": "syncing"}, {"migration_cycle": "cutovered"}],
    ids=["finished", "syncing", "cycle"],
)
async def test_a_new_server_cannot_be_registered_past_its_first_state(
    client: httpx.AsyncClient, fields: dict[str, str]
) -> None:
    body = server(**fields)
    assert_sms_error(await client.post("/v3/sources", json=body, headers=auth()), 400, "SMS.2003")
    listed = await ok(client.get("/v3/sources", params={"name": body["name"]}, headers=auth()))
    assert listed["count"] == 0
    for state in ("waiting", "unavailable"):  # the first states a register may give
        server_id = await register(client, server(state=state))
        shown = await ok(client.get(f"/v3/sources/{server_id}", headers=auth()))
        assert shown["state"] == state and shown.get("migration_cycle") is None


LONG = "x" * 256
DISK = {"name": "/dev/vda", "device_use": "BOOT", "size": 1, "used_size": 1, "physical_volumes": []}
LV = {
    "file_system": "ext4",
    "inode_size": 1,
    "mount_point": "/",
    "name": "lv",
    "size": 1,
    "used_size": 1,
    "free_size": 0,
}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"name": LONG}, "name"),
        ({"os_version": LONG}, "os_version"),
        ({"cpu_quantity": 65536}, "cpu_quantity"),
        ({"cpu_quantity": -1}, "cpu_quantity"),
        ({"memory": 9223372036854775808}, "memory"),
        ({"io_read_wait": 10000.5}, "io_read_wait"),
        ({"os_type": "SOLARIS"}, "os_type"),
        ({"firmware": "OPENBOOT"}, "firmware"),
        ({"platform": "mainframe"}, "platform"),
        ({"state": "flying"}, "state"),
        ({"migration_cycle": "dreaming"}, "migration_cycle"),
        ({"start_type": "AUTO"}, "start_type"),
        ({"has_rsync": "maybe"}, "has_rsync"),
        ({"disks": [{**DISK, "name": LONG}]}, "disks[0].name"),
        ({"disks": [{**DISK, "device_use": "SWAP"}]}, "disks[0].device_use"),
        ({"disks": [{k: v for k, v in DISK.items() if k != "size"}]}, "disks[0].size"),
        ({"disks": [{**DISK, "partition_style": "APM"}]}, "disks[0].partition_style"),
        (
            {
                "networks": [
                    {
                        "name": "eth0",
                        "ip": "1",
                        "netmask": "m",
                        "gateway": "g",
                        "mac": "a",
                        "mtu": 2147483648,
                    }
                ]
            },
            "networks[0].mtu",
        ),
        ({"volume_groups": [{"logical_volumes": [LV] * 256}]}, "volume_groups[0].logical_volumes"),
        (
            {"volume_groups": [{"logical_volumes": [{**LV, "name": "n" * 1025}]}]},
            "volume_groups[0].logical_volumes[0].name",
        ),
        (
            {"volume_groups": [{"logical_volumes": [{**LV, "block_size": 1048577}]}]},
            "volume_groups[0].logical_volumes[0].block_size",
        ),
    ],
)
async def test_every_limit_is_enforced_and_nothing_is_stored(
    client: httpx.AsyncClient, fields: dict[str, Any], named: str
) -> None:
    body = {**server(), **fields}
    response = await client.post("/v3/sources", json=body, headers=auth())
    error = assert_sms_error(response, 400, "SMS.1001")
    assert named in error["error_msg"]
    marker = body["hostname"]
    assert await count_named(client, marker) == 0


async def test_missing_registration_fields_are_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v3/sources", json={"name": "x", "ip": "1.2.3.4"}, headers=auth())
    error = assert_sms_error(response, 400, "SMS.1001")
    assert "os_type" in error["error_msg"] and "os_version" in error["error_msg"]


async def test_malformed_json_and_oversized_bodies(client: httpx.AsyncClient) -> None:
    headers = {**auth(), "Content-Type": "application/json"}
    bad = await client.post("/v3/sources", content=b'{"name": ', headers=headers)
    assert_sms_error(bad, 400, "SMS.1002")
    huge = await client.post("/v3/sources", content=b" " * 2_000_000, headers=headers)
    assert_sms_error(huge, 413, "SMS.1003")


async def test_no_or_bad_tokens_are_401(client: httpx.AsyncClient) -> None:
    now = int(time.time())
    claims = {"sub": "u", "domain_id": "domain-a", "actions": ["*"], "exp": now + 60}
    cases = {
        "SMS.9001": {},
        "SMS.9002": {"X-Auth-Token": "not-a-jwt"},
        "SMS.9003": {"X-Auth-Token": token(ttl=-10)},
    }
    wrong_secret = jwt.encode(claims, "another-secret-another-secret-0000", algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    no_domain = jwt.encode({**claims, "domain_id": None}, SECRET, algorithm="HS256")
    for code, headers in cases.items():
        assert_sms_error(
            await client.post("/v3/sources", json=server(), headers=headers), 401, code
        )
    for bad in (wrong_secret, unsigned, no_domain):
        response = await client.get("/v3/sources", headers={"X-Auth-Token": bad})
        assert_sms_error(response, 401, "SMS.9002")


async def test_token_without_the_action_is_403_in_the_seed_shape(client: httpx.AsyncClient) -> None:
    headers = auth(actions=["sms:server:queryServer"])
    body = server()
    response = await client.post("/v3/sources", json=body, headers=headers)
    error = assert_sms_error(response, 403, "SMS.9004")
    assert "sms:server:migrationServer" in error["error_msg"]
    assert isinstance(error["encoded_authorization_message"], str)
    assert 1 <= len(error["error_param"]) <= 20
    assert error["details"][0]["error_code"] == "SMS.9004"
    assert await count_named(client, body["name"]) == 0


async def test_another_domain_can_neither_see_nor_change_a_server(
    client: httpx.AsyncClient,
) -> None:
    body = server()
    server_id = await register(client, body, domain="domain-a")
    other = auth("domain-b")
    assert_sms_error(await client.get(f"/v3/sources/{server_id}", headers=other), 404, "SMS.2001")
    assert_sms_error(
        await client.delete(f"/v3/sources/{server_id}", headers=other), 404, "SMS.2001"
    )
    changed = await client.post("/v3/sources", json={"id": server_id, "memory": 1}, headers=other)
    assert_sms_error(changed, 404, "SMS.2001")
    listed = (await client.get("/v3/sources", params={"name": body["name"]}, headers=other)).json()
    assert listed["count"] == 0
    # The same host registered by domain-b is domain-b's own server, not domain-a's.
    assert await register(client, body, domain="domain-b") != server_id
    shown = (await client.get(f"/v3/sources/{server_id}", headers=auth("domain-a"))).json()
    assert "memory" not in shown


async def test_body_domain_id_of_another_tenant_is_403(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v3/sources", json=server(domain_id="domain-z"), headers=auth("domain-a")
    )
    assert_sms_error(response, 403, "SMS.9004")


async def test_delete_then_register_again_makes_a_new_server(client: httpx.AsyncClient) -> None:
    body = server()
    server_id = await register(client, body)
    deleted = await client.delete(f"/v3/sources/{server_id}", headers=auth())
    assert (deleted.status_code, deleted.json()) == (200, {})
    assert_sms_error(await client.get(f"/v3/sources/{server_id}", headers=auth()), 404, "SMS.2001")
    assert_sms_error(
        await client.delete(f"/v3/sources/{server_id}", headers=auth()), 404, "SMS.2001"
    )
    assert await register(client, body) != server_id


async def test_list_filters_and_pages_newest_first(client: httpx.AsyncClient) -> None:
    tag = uuid.uuid4().hex[:8]
    domain = f"domain-list-{tag}"
    ids = [await register(client, server(f"{tag}-{i}", ip=f"10.1.0.{i}"), domain) for i in range(5)]
    headers = auth(domain)
    listed = (await client.get("/v3/sources", headers=headers)).json()
    assert listed["count"] == 5
    assert [s["id"] for s in listed["source_servers"]] == ids[::-1]
    page = (
        await client.get("/v3/sources", params={"limit": 2, "offset": 2}, headers=headers)
    ).json()
    assert [s["id"] for s in page["source_servers"]] == ids[::-1][2:4]
    assert page["count"] == 5
    by_ip = (await client.get("/v3/sources", params={"ip": "10.1.0.3"}, headers=headers)).json()
    assert [s["id"] for s in by_ip["source_servers"]] == [ids[3]]
    by_name = (await client.get("/v3/sources", params={"name": f"{tag}-4"}, headers=headers)).json()
    assert [s["id"] for s in by_name["source_servers"]] == [ids[4]]
    by_state = (
        await client.get("/v3/sources", params={"state": "waiting"}, headers=headers)
    ).json()
    assert by_state["count"] == 5
    bad = await client.get("/v3/sources", params={"limit": 0}, headers=headers)
    assert_sms_error(bad, 400, "SMS.1001")


async def test_every_route_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"post", "get"} <= set(paths["/v3/sources"])
    assert {"get", "delete"} <= set(paths["/v3/sources/{source_id}"])
    assert "/healthz" in paths and "/readyz" in paths


async def test_unknown_routes_answer_in_the_sms_shape(client: httpx.AsyncClient) -> None:
    assert_sms_error(await client.get("/v3/nothing", headers=auth()), 404, "SMS.1004")
    assert_sms_error(await client.put("/v3/sources", headers=auth()), 405, "SMS.1005")

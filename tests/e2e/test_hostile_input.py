"""Hostile input: every route refuses bad credentials, and oversized or deep bodies are cheap.

The routes come from the served OpenAPI document, so a new route is covered by
these tests the day it lands.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.conftest import SECRET, auth, token
from tests.e2e.helpers import ok, server_body
from tests.support.processes import System

Route = tuple[str, str]


async def routes(client: httpx.AsyncClient) -> list[tuple[str, str, dict[str, Any]]]:
    document = (await client.get("/openapi.json")).json()
    found = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            found.append((method.upper(), re.sub(r"\{[^}]+\}", "1", path), operation))
    return found


def family(path: str) -> str:
    return "zstack" if path.startswith("/zstack") else "coc" if path.startswith("/v1/") else "sms"


def credentials(path: str, jwt_token: str) -> dict[str, str]:
    if family(path) == "zstack":
        return {"Authorization": f"OAuth {jwt_token}"}
    return {"X-Auth-Token": jwt_token}


def error_code(response: httpx.Response) -> str:
    body = response.json()
    return str(body["error"]["code"] if "error" in body else body["error_code"])


def _jwt(secret: str | None, algorithm: str, expires_in: int = 600) -> str:
    claims = {"sub": "x", "domain_id": "domain-a", "actions": ["*"]}
    return jwt.encode({**claims, "exp": int(time.time()) + expires_in}, secret, algorithm)


# What answers without a token: health, and the console's page and its sign-in (which takes
# the token or key it checks in its body). The console's stream needs one (tested here) and
# shows only what the token's actions read (tests/e2e/test_console.py).
OPEN = ("/healthz", "/readyz", "/console", "/console/session")
STREAMS = ("/console/stream",)

BAD_TOKENS = {
    "missing": None,
    "malformed": "not.a.jwt",
    "wrongly signed": _jwt("wrong-secret-wrong-secret-000000", "HS256"),
    "alg none": _jwt(None, "none"),
    "expired": _jwt(SECRET, "HS256", expires_in=-5),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_no_route_but_health_answers_without_a_valid_token(
    client: httpx.AsyncClient, kind: str
) -> None:
    for method, path, _ in await routes(client):
        bad = BAD_TOKENS[kind]
        headers = credentials(path, bad) if bad else {}
        response = await client.request(method, path, headers=headers, json={})
        if path in OPEN:
            assert response.status_code in (200, 400, 503), (path, response.text)
            continue
        assert response.status_code == 401, (kind, method, path, response.text)
        assert error_code(response)


async def test_an_action_allows_exactly_the_routes_that_name_it(client: httpx.AsyncClient) -> None:
    for method, path, operation in await routes(client):
        if path in OPEN + STREAMS:
            continue
        headers = credentials(path, token("domain-a", ["nothing:at:all"]))
        response = await client.request(method, path, headers=headers, json={})
        assert response.status_code == 403, (method, path, response.text)
        action = re.search(r"perform action (\S+) on", response.text)
        assert action, response.text
        allowed = credentials(path, token("domain-a", [action.group(1)]))
        response = await client.request(method, path, headers=allowed, json={})
        assert response.status_code != 403, (method, path, operation.get("summary"))


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("deeply nested", "[" * 100_000 + "]" * 100_000),
        # Deeper than a store keeps (MongoDB: 100 levels), in a field pydantic takes as it is.
        (
            "nested past the store",
            json.dumps({"name": "n", "x": [[[]]]}).replace("[[[]]]", "[" * 65 + "]" * 65),
        ),
        ("huge array", json.dumps({"disks": [{}] * 200_000})),
        ("giant string", json.dumps({"name": "x" * 900_000})),
        ("too large", json.dumps({"name": "x" * 2_000_000})),
    ],
)
async def test_hostile_bodies_get_400_or_413_quickly(
    client: httpx.AsyncClient, name: str, body: str
) -> None:
    headers = {"X-Auth-Token": token(), "Content-Type": "application/json"}
    started = time.monotonic()
    response = await client.post("/v3/sources", content=body, headers=headers)
    assert response.status_code in (400, 413), (name, response.status_code)
    assert response.json()["error_code"].startswith("SMS.")
    assert time.monotonic() - started < 3, name
    assert (await client.get("/healthz")).status_code == 200  # the worker is still serving


async def test_a_body_over_the_limit_is_answered_413_not_reset(client: httpx.AsyncClient) -> None:
    # Answered as soon as its length was declared, then closed on the unread rest, such a
    # request was often reset: the client saw a write or read error, not the 413. The
    # body comes slowly here so that the client is surely still sending.
    body = json.dumps({"name": "x" * 2_000_000}).encode()

    async def slowly() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]
            await asyncio.sleep(0.005)

    headers = {"X-Auth-Token": token(), "Content-Type": "application/json"}
    declared = {**headers, "Content-Length": str(len(body))}
    for sent_with in (declared, declared, headers, headers):  # without a length: chunked
        response = await client.post("/v3/sources", content=slowly(), headers=sent_with)
        assert response.status_code == 413
        assert response.json()["error_code"] == "SMS.1003"


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(system: System) -> None:
    jwt_token = token("domain-fuzz", ["*"])
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{system.gateway_url}/openapi.json",
            "-H",
            f"X-Auth-Token: {jwt_token}",
            "-H",
            f"Authorization: OAuth {jwt_token}",
            "--max-examples",
            "15",
            "--phases",
            "examples,fuzzing",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = result.stdout[-3000:]
    assert result.returncode == 0, summary
    assert re.search(r"(\d+) generated, \1 passed", summary), summary


@pytest.mark.parametrize(
    "detail",
    ["[" * 65_000, "{" * 65_000, '{"a":' * 70 + "1" + "}" * 70],
    ids=["brackets", "braces", "deep object"],
)
async def test_a_result_detail_string_nested_too_deep_is_400_not_500(
    client: httpx.AsyncClient, detail: str
) -> None:
    server_id = (await ok(client.post("/v3/sources", json=server_body(), headers=auth())))["id"]
    body = {"command_name": "UPLOAD_LOG", "result": "success", "result_detail": detail}
    response = await client.post(
        f"/v3/sources/{server_id}/command_result", json=body, headers=auth()
    )
    assert response.status_code == 400, response.text
    assert response.json()["error_code"] == "SMS.1001"
    assert "result_detail" in response.json()["error_msg"]


async def test_the_development_secret_outside_development_is_loudly_warned_about(
    system: System, base_env: dict[str, str]
) -> None:
    env = {k: v for k, v in base_env.items() if k != "REHOST_AUTH_SECRET"}
    gateway = system.add("gateway", None, name="gateway-dev-secret")
    gateway.env = {**env, "REHOST_GATEWAY_PORT": gateway.env["REHOST_GATEWAY_PORT"]}
    gateway.start()
    try:
        log = gateway.log_path.read_text()
        assert "auth.development_secret" in log and "ANYONE CAN MINT THEM" in log
    finally:
        system.discard("gateway-dev-secret")
    quiet = system.add("gateway", None, name="gateway-development")
    quiet.env = {**quiet.env, "REHOST_DEVELOPMENT": "true"}
    quiet.env.pop("REHOST_AUTH_SECRET")
    quiet.start()
    try:
        assert "auth.development_secret" not in quiet.log_path.read_text()
    finally:
        system.discard("gateway-development")

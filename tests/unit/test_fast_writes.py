"""The fleet's reports answered before the framework (services/gateway/writes.py): what it
answers itself, and everything it leaves to the route, body and all."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.gateway.deps import Senders
from services.gateway.next_commands import NextCommands
from services.gateway.writes import AnsweredWrites
from shared.access_keys import AccessKeys
from shared.auth import VerifiedTokens, mint
from shared.bulk import BulkSender
from shared.bus import Unavailable
from shared.envelope import Reply
from tests.support.fakes import ScriptedRequester
from tests.support.sdk import key_file, sdk_signed

SECRET = "unit-secret-unit-secret-unit-secret-00"
LIMIT = 200
REGISTER = {"name": "web-1", "ip": "10.0.0.5", "os_type": "LINUX"}


class Inner:
    """The framework behind the fast path: records each request and the body it read."""

    def __init__(self, requester: ScriptedRequester) -> None:
        self.tokens = VerifiedTokens(SECRET)
        self.next_commands = NextCommands()
        senders = Senders(
            registers=BulkSender(requester, "sms.source.register", 5),
            results=BulkSender(requester, "sms.source.report_result", 5),
            progress=BulkSender(requester, "sms.task.progress", 5),
        )
        settings = type("Settings", (), {"max_body_bytes": LIMIT})()
        state = {
            "tokens": self.tokens,
            "next_commands": self.next_commands,
            "senders": senders,
            "settings": settings,
            "access_keys": AccessKeys(None),  # none: a signature goes to the route
        }
        self.state = type("State", (), state)()
        self.reached: list[tuple[str, bytes]] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # type: ignore[type-arg]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.reached.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(
    app: AnsweredWrites,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    chunk: int = 0,
    **scope: Any,
) -> tuple[int, dict[str, str], Any]:
    """POSTs `body` to /v3/sources (or what `scope` says), in chunks of `chunk` bytes."""
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] if chunk else [body]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
        for i, p in enumerate(pieces)
    ]
    sent: list[dict] = []  # type: ignore[type-arg]

    async def receive() -> dict:  # type: ignore[type-arg]
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    request = {"type": "http", "method": "POST", "path": "/v3/sources", "query_string": b""}
    await app({**request, "headers": headers, **scope}, receive, send)  # type: ignore[arg-type]
    response_headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], response_headers, json.loads(sent[1]["body"])


def setup(answer: Reply | Any = None) -> tuple[AnsweredWrites, Inner, ScriptedRequester, str]:
    reply = answer or Reply(status=200, body={"id": "s-1"})
    requester = ScriptedRequester(
        {
            "sms.source.register": reply,
            "sms.source.report_result": Reply(status=200, body={}),
            "sms.task.progress": Reply(status=200, body={}),
        }
    )
    inner = Inner(requester)
    token = mint(SECRET, "d", ["*"])
    inner.tokens.verify(token)
    return AnsweredWrites(inner), inner, requester, token  # type: ignore[arg-type]


def json_headers(token: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-auth-token", token.encode()), (b"content-type", b"application/json")]


async def test_a_usual_report_is_answered_without_the_framework() -> None:
    app, inner, requester, token = setup()
    status, headers, body = await call(app, json.dumps(REGISTER).encode(), json_headers(token))
    assert (status, body) == (200, {"id": "s-1"}) and headers["content-type"] == "application/json"
    assert requester.sent == [("sms.source.register", REGISTER, None)]  # only the fields sent
    inner.next_commands.learn("s1", "d", 1, {"command_name": "SYNC"}, confirmed=True)
    result = {"command_name": "SYNC", "result": "success", "result_detail": {}}
    status, _, body = await call(
        app, json.dumps(result).encode(), json_headers(token), path="/v3/sources/s1/command_result"
    )
    assert (status, body) == (200, {}) and requester.sent[-1][1]["server_id"] == "s1"
    # Answered: the next poll is not handed SYNC again while its record is on the way.
    assert json.loads(inner.next_commands.answer("s1", "d") or b"")["command_name"] == ""
    status, _, _ = await call(
        app,
        json.dumps({"subtask_name": "x", "progress": 5}).encode(),
        json_headers(token),
        method="PUT",
        path="/v3/tasks/t1/progress",
    )
    assert status == 200 and requester.sent[-1][:2] == (
        "sms.task.progress",
        {**requester.sent[-1][1], "task_id": "t1", "progress": 5},
    )
    assert inner.reached == []


async def test_an_unanswered_send_is_a_503_in_the_sms_shape() -> None:
    def down(_: dict[str, Any]) -> Reply:
        raise Unavailable("no reply")

    app, _, _, token = setup(down)
    status, headers, body = await call(app, json.dumps(REGISTER).encode(), json_headers(token))
    assert status == 503 and headers["retry-after"] == "1" and body["error_code"].startswith("SMS.")


@pytest.mark.parametrize(
    ("case", "body", "headers", "scope", "chunk"),
    [
        ("a token not yet verified", REGISTER, "unseen", {}, 0),
        ("a token without the action", REGISTER, "reader", {}, 0),
        ("a signature", REGISTER, [(b"authorization", b"SDK-HMAC-SHA256 x")], {}, 0),
        ("not JSON by its type", REGISTER, [(b"content-type", b"text/plain")], {}, 0),
        ("a query string", REGISTER, [], {"query_string": b"x=1"}, 0),
        ("another method", REGISTER, [], {"method": "PUT"}, 0),
        ("another route", REGISTER, [], {"path": "/v3/tasks"}, 0),
        ("a body that does not validate", {"ip": 5}, [], {}, 0),
        ("a body that is not JSON", b"{nope", [], {}, 0),
        (
            "a body nested too deep",
            b'{"name": "x", "a": ' + b"[" * 70 + b"]" * 70 + b"}",
            [],
            {},
            0,
        ),
        ("a body over the limit", {**REGISTER, "hostname": "h" * 250}, [], {}, 64),
    ],
)
async def test_what_the_fast_path_leaves_to_the_route(
    case: str, body: Any, headers: Any, scope: dict[str, Any], chunk: int
) -> None:
    app, inner, requester, token = setup()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if headers in ("unseen", "reader"):
        other = mint(SECRET, "d2", ["*" if headers == "unseen" else "sms:server:queryServer"])
        if headers == "reader":
            inner.tokens.verify(other)
        sent = json_headers(other)
    else:
        replaced = {name for name, _ in headers}
        sent = [h for h in json_headers(token) if h[0] not in replaced] + headers
    status, _, _ = await call(app, raw, sent, chunk=chunk, **scope)
    assert status == 418, case  # the framework's answer
    assert inner.reached == [(scope.get("path", "/v3/sources"), raw)], case  # the whole body
    assert requester.sent == [], case


def signed(
    body: bytes, path: str = "/v3/sources", age: float = 0, **changes: Any
) -> list[tuple[bytes, bytes]]:
    """The headers of a POST of `body` signed by the SDK `age` minutes ago; `changes`
    replace some of them after signing."""
    when = datetime.now(UTC) - timedelta(minutes=age)
    headers, _ = sdk_signed("POST", path, [], body, when)
    headers |= changes
    return [(k.encode(), v.encode()) for k, v in headers.items()]


def with_key(app: AnsweredWrites, folder: Path, actions: list[str], enabled: bool = True) -> None:
    app.state.access_keys = AccessKeys(str(key_file(folder, "d", actions, enabled)))


async def test_a_report_signed_by_the_sdk_is_answered_without_the_framework(
    tmp_path: Path,
) -> None:
    """As the SMS agents send them: their access key is how they authenticate."""
    app, inner, requester, _ = setup()
    with_key(app, tmp_path, ["sms:*"])
    raw = json.dumps(REGISTER).encode()
    status, _, body = await call(app, raw, signed(raw))
    assert (status, body) == (200, {"id": "s-1"})
    assert requester.sent == [("sms.source.register", REGISTER, None)]
    result = json.dumps({"command_name": "SYNC", "result": "success", "result_detail": {}})
    path = "/v3/sources/s1/command_result"
    status, _, _ = await call(app, result.encode(), signed(result.encode(), path), path=path)
    assert status == 200 and requester.sent[-1][0] == "sms.source.report_result"
    assert inner.reached == []


@pytest.mark.parametrize(
    ("case", "actions", "enabled", "changes", "tampered"),
    [
        ("a body other than the one signed", ["*"], True, {}, True),
        ("a date past the 15 minutes", ["*"], True, {"age": 16}, False),
        ("a project the key does not cover", ["*"], True, {"x-project-id": "p2"}, False),
        (
            "an unknown key",
            ["*"],
            True,
            {"authorization": "SDK-HMAC-SHA256 Access=AKX, SignedHeaders=host, Signature=00"},
            False,
        ),
        ("a disabled key", ["*"], False, {}, False),
        ("a key without the action", ["sms:server:queryServer"], True, {}, False),
        ("another scheme", ["*"], True, {"authorization": "Basic eDp5"}, False),
    ],
)
async def test_a_signature_the_route_would_refuse_goes_to_it(
    tmp_path: Path,
    case: str,
    actions: list[str],
    enabled: bool,
    changes: dict[str, Any],
    tampered: bool,
) -> None:
    app, inner, requester, _ = setup()
    with_key(app, tmp_path, actions, enabled)
    raw = json.dumps(REGISTER).encode()
    headers = signed(raw, **changes)
    sent = json.dumps({**REGISTER, "name": "web-2"}).encode() if tampered else raw
    status, _, _ = await call(app, sent, headers)
    assert status == 418, case  # the framework's answer: the route says what is wrong
    assert inner.reached == [("/v3/sources", sent)] and requester.sent == [], case

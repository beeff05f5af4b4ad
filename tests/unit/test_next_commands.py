"""The gateway's read model of the agents' next commands, and the poll answered before the
framework (services/gateway/next_commands.py, polls.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.next_commands import HOLD_SECONDS, NextCommands
from services.gateway.polls import AnsweredPolls
from shared.access_keys import AccessKeys
from shared.auth import VerifiedTokens, mint
from tests.support.sdk import key_file, sdk_signed

START = {"command_name": "START", "command_param": {"task_id": "t"}}
SYNC = {"command_name": "SYNC", "command_param": None}
NOTHING = {"command_name": "", "command_param": None}


def event(
    kind: str, server: str, version: int, head: dict[str, Any], domain: str = "d", name: str = ""
) -> dict[str, Any]:
    """A channel's event; `name`: the command queued or completed (by default, the head)."""
    return {
        "type": kind,
        "aggregate_id": server,
        "aggregate_version": version,
        "domain_id": domain,
        "data": {"server_id": server, "next": head, "command_name": name or head["command_name"]},
    }


def follow(model: NextCommands, *events: dict) -> None:  # type: ignore[type-arg]
    handlers = model.handlers()
    for e in events:
        handlers[e["type"]](e)


def answered(model: NextCommands, server: str = "s", domain: str = "d") -> Any:
    body = model.answer(server, domain)
    return None if body is None else json.loads(body)


def test_an_event_alone_never_answers_a_poll() -> None:
    model = NextCommands()
    follow(model, event("command.queued", "s", 1, START))
    assert answered(model) is None  # the owner has not said the server exists
    model.learn("s", "d", 1, START, confirmed=True)
    assert answered(model) == START


def test_the_newest_version_wins_whoever_says_it() -> None:
    model = NextCommands()
    follow(model, event("command.completed", "s", 3, SYNC))
    model.learn("s", "d", 2, START, confirmed=True)  # an answer read before the event
    assert answered(model) == SYNC
    follow(model, event("command.queued", "s", 1, START))  # a redelivered old event
    assert answered(model) == SYNC


@given(st.permutations(range(1, 8)))
def test_any_order_of_events_ends_at_the_last_state(order: list[int]) -> None:
    heads = {v: {"command_name": f"C{v}", "command_param": None} for v in range(1, 8)}
    model = NextCommands()
    model.learn("s", "d", 0, NOTHING, confirmed=True)
    follow(model, *(event("command.queued", "s", v, heads[v]) for v in order))
    assert answered(model) == heads[7]


def test_another_tenant_is_never_answered_and_cannot_overwrite() -> None:
    model = NextCommands()
    model.learn("s", "d", 1, START, confirmed=True)
    assert answered(model, domain="other") is None
    follow(model, event("command.completed", "s", 9, NOTHING, domain="other"))
    assert answered(model) == START


def completed(server: str, version: int, name: str, head: dict[str, Any]) -> dict[str, Any]:
    return event("command.completed", server, version, head, name=name)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_command_answered_here_is_held_until_its_completion_arrives() -> None:
    model = NextCommands()
    model.learn("s", "d", 1, START, confirmed=True)
    model.answered("s", "START")
    assert answered(model) == NOTHING  # its record reaches command-result a hop later
    model.learn("s", "d", 1, START, confirmed=True)  # an answer read before the result
    follow(model, event("command.queued", "s", 2, START, name="SYNC"))  # queued behind it
    assert answered(model) == NOTHING
    follow(model, completed("s", 3, "START", SYNC))
    assert answered(model) == SYNC
    model.answered("s", "START")  # not the head it holds: the owner says what is next
    assert answered(model) is None


def test_the_owners_answer_does_not_hand_out_a_held_command() -> None:
    model = NextCommands()  # a gateway that never polled this server: no entry
    model.answered("s", "START")
    assert json.loads(model.answer_of("s", START)) == NOTHING
    assert json.loads(model.answer_of("s", SYNC)) == SYNC
    model.learn("s", "d", 1, START, confirmed=True)
    assert answered(model) == NOTHING
    follow(model, completed("s", 2, "START", START))  # a second START waited behind it
    assert answered(model) == START


def test_a_hold_ends_after_its_time_when_nothing_completes() -> None:
    clock = Clock()
    model = NextCommands(clock)
    model.learn("s", "d", 1, NOTHING, confirmed=True)
    model.answered("s", "START")  # a result for a command that was never queued
    model.learn("s", "d", 2, START, confirmed=True)  # the owner says it was queued since
    assert answered(model) == NOTHING  # and its event has not come
    clock.now += HOLD_SECONDS
    assert answered(model) == START


def test_a_command_queued_after_a_result_for_it_is_not_held() -> None:
    model = NextCommands()
    model.answered("s", "SYNC")  # reported before it was queued: it completes nothing
    model.answered("s", "START")  # reported in the same breath, for the head
    model.learn("s", "d", 1, START, confirmed=True)  # the owner has not settled START yet
    assert answered(model) == NOTHING
    follow(model, completed("s", 2, "START", NOTHING))
    follow(model, event("command.queued", "s", 3, SYNC))
    assert answered(model) == SYNC


def test_a_late_queued_event_does_not_end_a_hold_made_before_the_model_knew_the_channel() -> None:
    model = NextCommands()  # a gateway that never polled this server: no entry
    model.answered("s", "START")  # its command.queued had not reached this process yet
    follow(model, event("command.queued", "s", 1, START))  # it does now
    assert json.loads(model.answer_of("s", START)) == NOTHING  # not settled yet: still held
    model.learn("s", "d", 1, START, confirmed=True)
    follow(model, event("command.queued", "s", 1, START))  # redelivered: not newer
    assert answered(model) == NOTHING


def test_an_owner_answer_asked_before_the_hold_was_made_does_not_date_it() -> None:
    model = NextCommands()
    asked = model.answers  # a first poll's lookup leaves, before START is queued
    model.answered("s", "START")  # START is queued, and its result answered here
    model.learn("s", "d", 0, NOTHING, confirmed=True, asked=asked)  # read before the enqueue
    follow(model, event("command.queued", "s", 1, START))  # the queueing is no news
    assert answered(model) == NOTHING  # held until command.completed
    model.learn("s", "d", 1, START, confirmed=True, asked=model.answers)  # asked after it
    follow(model, event("command.queued", "s", 1, START))  # redelivered: not newer
    assert answered(model) == NOTHING
    follow(model, event("command.queued", "s", 2, START, name="SYNC"))
    assert answered(model) == NOTHING  # the queueing of another command does not end it
    follow(model, event("command.queued", "s", 3, START))  # START queued again, after
    assert answered(model) == START


def test_a_completion_that_overtook_the_answer_does_not_hold_the_next_one() -> None:
    model = NextCommands()
    model.learn("s", "d", 1, START, confirmed=True)
    follow(model, completed("s", 2, "START", START))  # the event came before the reply
    model.answered("s", "START")
    assert answered(model) == START


def test_a_doubted_entry_asks_the_owner_and_a_deleted_one_stays_gone() -> None:
    model = NextCommands()
    model.learn("s", "d", 1, START, confirmed=True)
    model.doubt("s")
    assert answered(model) is None
    model.learn("s", "d", 2, NOTHING, confirmed=True)
    assert answered(model) == NOTHING
    follow(model, {"type": "source.deleted", "aggregate_id": "s", "data": {"server_id": "s"}})
    model.learn("s", "d", 3, START, confirmed=True)  # an answer read before the delete
    follow(model, event("command.queued", "s", 4, START))
    assert answered(model) is None and len(model) == 0


def test_an_earlier_releases_event_without_next_makes_it_ask() -> None:
    model = NextCommands()
    model.learn("s", "d", 1, START, confirmed=True)
    old = event("command.queued", "s", 2, START)
    del old["data"]["next"]
    follow(model, old)
    assert answered(model) is None


def test_reset_forgets_everything_but_deletions() -> None:
    model = NextCommands()
    model.learn("s", "d", 1, START, confirmed=True)
    model.forget("gone")
    model.reset()
    assert answered(model) is None
    model.learn("gone", "d", 1, START, confirmed=True)
    assert answered(model, "gone") is None


# -- the poll answered before the framework -----------------------------------------------

SECRET = "unit-secret-unit-secret-unit-secret-00"


class Lookups:
    """command-result, as the lookups ask it: it knows no server but those it is told."""

    def __init__(self, known: dict[str, bytes]) -> None:
        self.known = known
        self.asked: list[tuple[str, str]] = []

    async def next_for(self, server_id: str, domain_id: str) -> bytes | None:
        self.asked.append((server_id, domain_id))
        return self.known.get(server_id)


class Inner:
    """The framework behind the fast path: records what reached it."""

    def __init__(self, tokens: VerifiedTokens, model: NextCommands) -> None:
        self.lookups = Lookups({})
        state = {
            "tokens": tokens,
            "next_commands": model,
            "lookups": self.lookups,
            "access_keys": AccessKeys(None),  # none: a signature goes to the route
        }
        self.state = type("State", (), state)()
        self.reached: list[str] = []

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:  # type: ignore[type-arg]
        self.reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


Headers = list[tuple[bytes, bytes]]


async def poll(app: AnsweredPolls, headers: Headers, **scope: Any) -> tuple[int, bytes]:
    """Sends a GET of `/v3/sources/s/command` (or what `scope` says) through `app`."""
    sent: list[dict] = []  # type: ignore[type-arg]

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    request = {"type": "http", "method": "GET", "path": "/v3/sources/s/command"}
    await app({**request, "query_string": b"", "headers": headers, **scope}, None, send)  # type: ignore[arg-type]
    return sent[0]["status"], sent[1]["body"]


async def test_a_poll_with_a_known_token_is_answered_before_the_framework() -> None:
    tokens, model = VerifiedTokens(SECRET), NextCommands()
    inner = Inner(tokens, model)
    app = AnsweredPolls(inner)  # type: ignore[arg-type]
    good = mint(SECRET, "d", ["sms:server:showCommand"])
    header = [(b"x-auth-token", good.encode())]
    model.learn("s", "d", 1, START, confirmed=True)
    assert (await poll(app, header))[0] == 404  # a token not yet verified: the route
    assert inner.reached == ["/v3/sources/s/command"]
    tokens.verify(good)
    status, body = await poll(app, header)
    assert status == 200 and json.loads(body) == START and not inner.lookups.asked
    status, body = await poll(app, header, path="/v3/sources/unknown/command")
    assert status == 404 and json.loads(body)["error_code"] == "SMS.2001"
    assert inner.lookups.asked == [("unknown", "d")]  # the owner was asked, not the route
    other = mint(SECRET, "other", ["*"])
    tokens.verify(other)
    assert (await poll(app, [(b"x-auth-token", other.encode())]))[0] == 404
    assert inner.lookups.asked[-1] == ("s", "other")  # another tenant's entry is not used
    assert len(inner.reached) == 1


async def test_what_the_fast_path_leaves_to_the_route() -> None:
    tokens, model = VerifiedTokens(SECRET), NextCommands()
    inner = Inner(tokens, model)
    app = AnsweredPolls(inner)  # type: ignore[arg-type]
    good, reader = mint(SECRET, "d", ["*"]), mint(SECRET, "d", ["sms:server:queryServer"])
    tokens.verify(good)
    tokens.verify(reader)
    header = [(b"x-auth-token", good.encode())]
    model.learn("s", "d", 1, START, confirmed=True)
    for headers, scope in [
        ([(b"x-auth-token", reader.encode())], {}),  # not allowed to poll
        ([*header, (b"content-length", b"2")], {}),  # a body
        ([*header, (b"authorization", b"SDK-HMAC-SHA256 ...")], {}),  # a signature
        (header, {"query_string": b"x=1"}),
        (header, {"method": "POST"}),
        (header, {"path": "/v3/sources/s/command_results"}),
    ]:
        assert (await poll(app, headers, **scope))[0] == 404
    assert len(inner.reached) == 6 and not inner.lookups.asked


def signed_poll(path: str = "/v3/sources/s/command", age: float = 0) -> Headers:
    """The headers of a poll signed by the SDK `age` minutes ago, as the SMS agents send it."""
    headers, _ = sdk_signed("GET", path, [], b"", datetime.now(UTC) - timedelta(minutes=age))
    return [(k.encode(), v.encode()) for k, v in headers.items()]


async def test_a_poll_signed_by_the_sdk_is_answered_before_the_framework(tmp_path: Path) -> None:
    tokens, model = VerifiedTokens(SECRET), NextCommands()
    inner = Inner(tokens, model)
    app = AnsweredPolls(inner)  # type: ignore[arg-type]
    model.learn("s", "d", 1, START, confirmed=True)
    inner.state.access_keys = AccessKeys(str(key_file(tmp_path, "d", ["sms:*"])))
    status, body = await poll(app, [*signed_poll(), (b"content-length", b"0")])
    assert (status, json.loads(body)) == (200, START) and inner.reached == []
    refused = [
        signed_poll("/v3/sources/other/command"),  # signed for another path
        signed_poll(age=16),  # past the 15 minutes
        [(k, v) for k, v in signed_poll() if k != b"x-sdk-date"],
    ]
    for headers in refused:
        assert (await poll(app, headers))[0] == 404  # the route's answer
    assert len(inner.reached) == 3 and not inner.lookups.asked
    inner.state.access_keys = AccessKeys(str(key_file(tmp_path, "d", ["sms:server:queryServer"])))
    assert (await poll(app, signed_poll()))[0] == 404 and len(inner.reached) == 4

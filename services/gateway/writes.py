"""The fleet's reports, answered before the framework when nothing about them is unusual.

After polls (polls.py), registers, command results and progress reports are what a fleet
sends most. Their routes validate the body, send it (shared/bulk.py) and answer the reply;
FastAPI's routing, dependencies, body parsing and middleware were about half of the
gateway's work per register. `AnsweredWrites` does the same for a request that needs
nothing else: a caller that allows the route's action — a token this process has already
verified (and not expired), or a valid SDK signature, as the SMS agents send (their
access key is how they authenticate) — a JSON body within the size and nesting limits
that validates, no query string. It sends the body with the routes' own functions and
answers with the routes' own response, so the status, body and headers are the same.

Anything else goes to the framework, body and all, as if this were not here: a token not
yet seen, a signature refused (the route answers why), a body that does not validate (the
route answers its 400 in the API's shape), one too large or too deeply nested (the limits
answer 413 / 400).
While spans are exported, every request goes to the framework, which traces it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from fastapi import FastAPI
from opentelemetry import context as otel_context
from pydantic import BaseModel, ValidationError
from starlette.types import Message, Receive, Scope, Send

from shared.auth import Principal
from shared.bus import Unavailable
from shared.contracts.commands import CommandResultBody
from shared.contracts.nesting import nests_deeper
from shared.contracts.sources import SourceServerBody
from shared.contracts.tasks import TaskProgress
from shared.envelope import Reply
from shared.errors import ApiError, SmsCode

from . import commands, sources, tasks
from .deps import fast_caller
from .errors import error_answer, unavailable_answer
from .middleware import enter_request_trace
from .replies import respond

log = structlog.get_logger(__name__)

# How a write is sent: (the application's state, the caller, the path's ids, the body).
Sending = Callable[[Any, Principal, tuple[str, ...], Any], Awaitable[Reply]]


@dataclass(frozen=True)
class Write:
    method: str
    path: re.Pattern[str]  # the route's path, its ids as groups, as FastAPI bounds them
    action: str
    body: type[BaseModel]
    send: Sending


WRITES = (
    Write(
        "POST",
        re.compile(r"/v3/sources"),
        "sms:server:migrationServer",
        SourceServerBody,
        lambda state, caller, _, body: sources.send_register(state.senders, caller, body),
    ),
    Write(
        "POST",
        re.compile(r"/v3/sources/([^/]{1,36})/command_result"),
        "sms:server:updateCommandResult",
        CommandResultBody,
        lambda state, caller, ids, body: commands.send_result(
            state.senders, state.next_commands, caller, ids[0], body
        ),
    ),
    Write(
        "PUT",
        re.compile(r"/v3/tasks/([^/]{1,255})/progress"),
        "sms:server:updateTaskProgress",
        TaskProgress,
        lambda state, caller, ids, body: tasks.send_progress(state.senders, caller, ids[0], body),
    ),
)


# The write, its path's ids, the token and the signature of a request the fast path may take.
Matched = tuple[Write, tuple[str, ...], str | None, str | None]


class AnsweredWrites:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.state = app.state  # what the wrapper in front of this one reads (polls.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        matched = self._matched(scope) if scope["type"] == "http" else None
        if matched is None:
            await self.app(scope, receive, send)
            return
        write, ids, token, authorization = matched
        limit = self.state.settings.max_body_bytes
        body, more = await _read(receive, limit)
        usual = not more and len(body) <= limit and not nests_deeper(body)
        caller = fast_caller(self.state, token, authorization, scope, body) if usual else None
        allowed = caller is not None and caller.allows(write.action)
        model = _valid(write.body, body) if allowed else None
        if caller is None or model is None:
            await self.app(scope, _replaying(body, more, receive), send)
            return
        trace = enter_request_trace(scope)
        try:
            response = respond(await write.send(self.state, caller, ids, model))
        except Unavailable as exc:
            response = unavailable_answer(exc, scope["path"])
        except Exception:
            log.exception("request.crashed", path=scope["path"])
            response = error_answer(ApiError(SmsCode.INTERNAL), scope["path"])
        finally:
            otel_context.detach(trace)
        await response(scope, receive, send)

    def _matched(self, scope: Scope) -> Matched | None:
        """The write, its path's ids, the token and the signature, when the fast path may
        answer it once its body is read."""
        if scope["query_string"] or not hasattr(self.state, "senders"):
            return None
        for write in WRITES:
            match = write.path.fullmatch(scope["path"])
            if match is not None and scope["method"] == write.method:
                break
        else:
            return None
        token, authorization, json = None, None, False
        for name, value in scope["headers"]:
            if name == b"transfer-encoding":
                return None  # a body of unknown length
            if name == b"x-auth-token":
                token = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-type":
                json = value.split(b";")[0].strip().lower() == b"application/json"
        if not json or (token is None and authorization is None):
            return None
        return write, match.groups(), token, authorization


def _valid(model: type[BaseModel], body: bytes) -> BaseModel | None:
    try:
        return model.model_validate_json(body)
    except ValidationError:
        return None  # the route answers it, in the API's shape


async def _read(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The body, or its first chunks past `limit` bytes; and whether more is to be read."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body"))
        if not more or size > limit:
            return b"".join(chunks), more


def _replaying(body: bytes, more: bool, receive: Receive) -> Receive:
    """`receive` as if nothing had been read from it yet."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": more}

    return again

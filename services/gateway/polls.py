"""An agent's poll for its next command: answered from the read model, and before the
framework sees it when the caller's token is already known.

`GET /v3/sources/{server_id}/command` is most of what a fleet sends: every agent, every
few seconds. `next_command_answer` is the one definition of its answer: the read model's,
or command-result's when the model does not know (asked many at a time, lookups.py). The
route answers with it; so does `AnsweredPolls`, in front of the framework, when the
caller — a token this process has already verified (and not expired), or a valid SDK
signature, as the SMS agents send — allows `sms:server:showCommand`: the same status,
body and headers, for a fraction of the cost (the framework's middleware, routing and
dependencies were two thirds of such a call). Anything else — a query string, a body, a
token not yet seen, a signature refused — goes to the route.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from shared import jsoncodec
from shared.auth import Principal
from shared.bus import Unavailable
from shared.errors import ApiError, SmsCode

from .deps import fast_caller
from .errors import unavailable
from .lookups import NextCommandLookups
from .next_commands import NextCommands

POLL = re.compile(r"/v3/sources/([^/]{1,36})/command")
ACTION = "sms:server:showCommand"
JSON = (b"content-type", b"application/json")


async def next_command_answer(state: Any, server_id: str, domain_id: str) -> tuple[int, bytes]:
    """The poll's status and body (`state`: the application's, holding the read model)."""
    known: NextCommands = state.next_commands
    answer = known.answer(server_id, domain_id)
    if answer is None:
        lookups: NextCommandLookups = state.lookups
        answer = await lookups.next_for(server_id, domain_id)
    if answer is None:
        error = ApiError(SmsCode.SOURCE_NOT_FOUND, f"Source server {server_id} does not exist.")
        return 404, jsoncodec.dump_bytes(error.body())
    return 200, answer


class App(Protocol):
    """An ASGI application that carries the FastAPI application's state."""

    state: Any

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


class AnsweredPolls:
    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        polled = self._polled(scope) if scope["type"] == "http" else None
        if polled is None:
            await self.app(scope, receive, send)
            return
        server_id, caller = polled
        headers = [JSON]
        try:
            status, body = await next_command_answer(self.app.state, server_id, caller.domain_id)
        except Unavailable as exc:
            error = unavailable(exc)
            status, body = error.status, jsoncodec.dump_bytes(error.body())
            headers.append((b"retry-after", b"1"))
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _polled(self, scope: Scope) -> tuple[str, Principal] | None:
        """The server polled and the caller, when this is a poll the fast path answers."""
        if scope["method"] != "GET" or scope["query_string"]:
            return None
        match = POLL.fullmatch(scope["path"])
        if match is None or not hasattr(self.app.state, "lookups"):
            return None
        token = authorization = None
        for name, value in scope["headers"]:
            if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
                return None  # a body to read: the route's work
            if name == b"x-auth-token":
                token = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        caller = fast_caller(self.app.state, token, authorization, scope, b"")
        if caller is None or not caller.allows(ACTION):
            return None
        return match.group(1), caller

"""An agent's poll answered before the framework sees it, when the read model can answer.

`GET /v3/sources/{server_id}/command` is most of what a fleet sends: every agent, every
few seconds. When the caller's token is one this process has already verified (and not
expired), it allows `sms:server:showCommand`, and the read model holds a confirmed answer
for that server in the caller's tenant, the answer is sent from here: the same status,
body and headers the route would send, for a fraction of the cost (the framework's
middleware, routing and dependencies were two thirds of such a call). Anything else —
a first poll, a signed request, a query string, a body, a token not yet seen — goes to
the route, which answers it (errors included) as it always did.
"""

from __future__ import annotations

import re

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from shared.auth import VerifiedTokens

from .next_commands import NextCommands

POLL = re.compile(r"/v3/sources/([^/]{1,36})/command")
ACTION = "sms:server:showCommand"


class AnsweredPolls:
    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self._answer(scope) if scope["type"] == "http" else None
        if answer is None:
            await self.app(scope, receive, send)
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _answer(self, scope: Scope) -> bytes | None:
        if scope["method"] != "GET" or scope["query_string"]:
            return None
        match = POLL.fullmatch(scope["path"])
        if match is None:
            return None
        token = None
        for name, value in scope["headers"]:
            if name in (b"content-length", b"transfer-encoding", b"authorization"):
                return None  # a body to read, or a signature to check: the route's work
            if name == b"x-auth-token":
                token = value.decode("latin-1")
        state = self.app.state
        tokens: VerifiedTokens = state.tokens
        caller = tokens.known(token) if token else None
        if caller is None or not caller.allows(ACTION):
            return None
        known: NextCommands | None = getattr(state, "next_commands", None)
        return None if known is None else known.answer(match.group(1), caller.domain_id)

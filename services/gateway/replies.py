"""A service's reply, answered over HTTP as it is: its status and its body."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from shared.auth import Principal
from shared.bus import Requester
from shared.envelope import Reply


def respond(reply: Reply) -> Response:
    if reply.status == 204 or reply.body is None:
        return Response(status_code=reply.status)
    return JSONResponse(status_code=reply.status, content=reply.body)


async def ask(
    requester: Requester, key: str, body: bytes | BaseModel, caller: Principal
) -> Response:
    """Sends `key` on the caller's behalf (its tenant, its subject) and answers the reply."""
    payload = body.model_dump_json().encode() if isinstance(body, BaseModel) else body
    reply = await requester.request(key, payload, domain_id=caller.domain_id, actor=caller.subject)
    return respond(reply)

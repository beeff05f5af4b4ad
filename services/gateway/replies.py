"""A service's reply, answered over HTTP as it is: its status and its body."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse

from shared.envelope import Reply


def respond(reply: Reply) -> Response:
    if reply.status == 204 or reply.body is None:
        return Response(status_code=reply.status)
    return JSONResponse(status_code=reply.status, content=reply.body)

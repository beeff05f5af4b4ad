"""The operator console: the page, signing in to it, and its live stream of events.

The page (`static/`) is plain HTML and a small script: it reads everything it shows from
the documented API with the caller's token, and follows `/console/stream` to know when
to read again. Signing in takes a token, or an access key and its secret (then answered
with a token for that key's tenant and actions, as the SDKs' signature would be): the
page keeps it in the tab's session storage and sends it as `X-Auth-Token`, never in a URL.
"""

from __future__ import annotations

import hmac
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field, model_validator

from shared.access_keys import AccessKeys
from shared.auth import Principal, TokenExpired, TokenInvalid, VerifiedTokens, mint
from shared.contracts.errors import SMS_ERRORS
from shared.errors import ApiError, SmsCode

from .deps import authenticate, forbid
from .live import LiveEvents

router = APIRouter(prefix="/console", tags=["operator console"], responses=SMS_ERRORS)
SESSION_SECONDS = 8 * 3600
STATIC = resources.files(__package__) / "static"
# What a stream shows of each kind of event: no more than its reader may read by the API.
READ_ACTIONS = {
    "source.": "sms:server:queryServer",
    "command.": "sms:server:queryServer",
    "task.": "sms:task:get",
    "script.": "coc:script:getJob",
    "zstack.": "zstack:vm:executeGuestVmCommand",
}


class SignIn(BaseModel):
    """A token, or an access key with its secret."""

    token: Annotated[str, Field(max_length=16384)] | None = None
    ak: Annotated[str, Field(max_length=128)] | None = None
    sk: Annotated[str, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _one_way(self) -> SignIn:
        if (self.token is None) == (self.ak is None or self.sk is None):
            raise ValueError("give either a token, or an access key (ak) and its secret (sk)")
        return self


class Session(BaseModel):
    token: str = Field(description="send it as X-Auth-Token")
    domain_id: str
    actions: list[str]
    expires_at: float = Field(description="epoch seconds")


@router.get("", response_class=HTMLResponse, summary="The operator console (a page)")
async def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "console.html").read_text())


@router.post(
    "/session",
    response_model=Session,
    summary="Sign in to the console: a token, or an access key and its secret",
)
async def sign_in(body: SignIn, request: Request) -> Session:
    settings = request.app.state.settings
    if body.token is not None:
        tokens: VerifiedTokens = request.app.state.tokens
        caller = _verified(tokens, body.token)
        return Session(token=body.token, **_of(caller))
    keys: AccessKeys = request.app.state.access_keys
    key = keys.get(body.ak or "")
    if key is None:
        raise ApiError(SmsCode.AK_UNKNOWN, "The access key is unknown.")
    if not key.enabled:
        raise ApiError(SmsCode.AK_DISABLED, "The access key is disabled.")
    if not hmac.compare_digest(key.sk.encode(), (body.sk or "").encode()):
        raise ApiError(SmsCode.SIGNATURE_INVALID, "The secret does not match the access key.")
    token = mint(
        settings.auth_secret,
        key.domain_id,
        list(key.actions),
        subject=f"ak:{key.ak}",
        ttl=SESSION_SECONDS,
    )
    return Session(token=token, **_of(request.app.state.tokens.verify(token)))


def _verified(tokens: VerifiedTokens, token: str) -> Principal:
    try:
        return tokens.verify(token)
    except TokenExpired as exc:
        raise ApiError(SmsCode.TOKEN_EXPIRED, "The token has expired.") from exc
    except TokenInvalid as exc:
        raise ApiError(SmsCode.TOKEN_INVALID, "The token is invalid.") from exc


def _of(caller: Principal) -> dict[str, object]:
    return {
        "domain_id": caller.domain_id,
        "actions": list(caller.actions),
        "expires_at": caller.expires_at,
    }


async def _caller(request: Request) -> Principal:
    return await authenticate(request, request.headers.get("x-auth-token"))


@router.get(
    "/stream",
    summary="The caller's tenant's events, live (Server-Sent Events)",
    description=(
        "`event: rehost` for each event (its envelope, `data`, and `trace_id`), "
        "`event: resync` when events may have been missed (read the state again), "
        "`event: dropped` before a reader that fell too far behind is closed. Only the "
        "kinds of events the caller may read by the API."
    ),
    response_class=StreamingResponse,
)
async def stream(
    request: Request, caller: Annotated[Principal, Depends(_caller)]
) -> StreamingResponse:
    live: LiveEvents = request.app.state.live
    readable = tuple(prefix for prefix, action in READ_ACTIONS.items() if caller.allows(action))
    if not readable:
        forbid(
            "You do not have permission to perform action sms:server:queryServer (or any "
            "other read of events) on resource stream."
        )
    return StreamingResponse(
        live.stream(caller.domain_id, readable),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
